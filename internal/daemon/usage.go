package daemon

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"syscall"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/master"
	"github.com/gotlsmgr/tlsmgr/internal/version"
)

// Usage is what tlsmgr -h prints. tlsmgr-go(8) has the whole story.
var Usage = withDefaults(usageText)

// usageText is Usage with {default:name} where name's default goes.
const usageText = `usage: tlsmgr -listen PATH [-o name=value ...] [-v] [-V] [-c]
       tlsmgr -S [-o name=value ...] [-v]
       tlsmgr -l -n SERVICE -t unix [-u] [-c] [-o name=value ...] [-v]
       tlsmgr -h | --version

tlsmgr is the TLS session cache and PRNG manager for Postfix, a drop-in
replacement for Postfix's tlsmgr(8).

Standalone (no master(8)):
  -listen PATH    serve the UNIX-domain socket PATH, made by the mail owner,
                  mode 0660, in a directory the mail owner can write, e.g.
                    install -d -o postfix -g postfix -m 0750 /run/tlsmgr
                    tlsmgr -listen /run/tlsmgr/tlsmgr.sock
  -S              serve one client on standard input and output
  -o name=value   set a main.cf parameter (after main.cf); may be repeated
  -v              more verbose logging (repeat for more)
  -V              also log to standard error
  -c              chroot to queue_directory once the files are open (root)
  -h, --help      this text; --version: the version

The third form is master(8)'s. Under master(8), in place of Postfix's own
tlsmgr, with this master.cf line (make install; make enable):
  tlsmgr     unix  -       -       y       1000?   1       tlsmgr-go
master(8) passes -l -n SERVICE -t unix and, as master.cf says, -u, -c, -v,
-V and -o; it also passes the status channel (fd 5) and the listening
socket (fd 6).

Configuration: $MAIL_CONFIG/main.cf, else /etc/postfix/main.cf under
master(8); standalone without MAIL_CONFIG, built-in defaults (all caches
in memory, state in $XDG_STATE_HOME/tlsmgr, or /var/lib/tlsmgr as root).

Common parameters (-o name=value or main.cf):
  smtpd_tls_session_cache_database   e.g. btree:${data_directory}/smtpd_scache,
  smtp_tls_session_cache_database    memory:NAME or redis:/path/to/settings.cf
  smtpd_tls_session_cache_timeout    {default:smtpd_tls_session_cache_timeout}
  smtpd_tls_session_cache_max_entries, smtpd_tls_session_cache_max_bytes
                                     {default:smtpd_tls_session_cache_max_entries}, {default:smtpd_tls_session_cache_max_bytes} (also smtp_, lmtp_)
  tlsmgr_ticket_key_persistence      {default:tlsmgr_ticket_key_persistence}
  tlsmgr_ticket_key_database         empty, or redis:/path/to/settings.cf
  tlsmgr_client_limit                {default:tlsmgr_client_limit}
  tls_random_source                  {default:tls_random_source}
  data_directory, queue_directory, mail_owner
See tlsmgr-go(8) for every parameter, and tlsmgrctl(1) to talk to the daemon.
`

// withDefaults puts into text the default of each parameter named as
// {default:name}, from config's table.
func withDefaults(text string) string {
	return defaultRef.ReplaceAllStringFunc(text, func(ref string) string {
		name := defaultRef.FindStringSubmatch(ref)[1]
		pm, ok := config.Parameter(name)
		if !ok || pm.NoDefault {
			panic("daemon: the usage names " + name + ", which has no default in config's table")
		}
		if pm.Default == "" {
			return "empty"
		}
		return pm.Default
	})
}

var defaultRef = regexp.MustCompile(`\{default:([a-z0-9_]+)\}`)

// commandLineRequest finds -h, --help or --version among the options of
// args, scanning them as master.ParseArgs does (so that "-o -h" is a
// value, not a request for help). It returns "help", "version" or "".
func commandLineRequest(args []string) string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch arg {
		case "-h", "-help", "--help":
			return "help"
		case "-version", "--version":
			return "version"
		case "--":
			return ""
		case "-listen":
			i++
			continue
		}
		if len(arg) < 2 || arg[0] != '-' {
			return ""
		}
		if strings.HasPrefix(arg, "-listen=") {
			continue
		}
		for j := 1; j < len(arg); j++ {
			if arg[j] == 'h' {
				return "help" // in a cluster, such as -vh
			}
			if strings.IndexByte("imnost", arg[j]) >= 0 {
				if j == len(arg)-1 {
					i++ // the value is the next argument
				}
				break
			}
		}
	}
	return ""
}

// printRequest answers a command-line request for help or the version;
// it reports whether there was one.
func printRequest(args []string, stdout io.Writer) bool {
	switch commandLineRequest(args) {
	case "help":
		fmt.Fprint(stdout, Usage)
	case "version":
		fmt.Fprintf(stdout, "tlsmgr %s\n", version.String())
	default:
		return false
	}
	return true
}

// errNoMaster is the start-up error of tlsmgr run by hand with neither
// -listen nor -S: it is not master(8)'s command line (which always has
// -t) and master(8)'s descriptors are not there.
var errNoMaster = errors.New("not started by master(8): no status channel on fd 5 and no listening socket on fd 6;" +
	" to run standalone, give it a socket: tlsmgr -listen /run/tlsmgr/tlsmgr.sock [-o name=value ...] (tlsmgr -h for more)")

// underMaster reports whether the descriptors master(8) always passes
// are there: the status channel (fd 5) or the first listening socket
// (fd 6) is an open socket. It only looks (fstat), so that the
// descriptors are still free for the checks that follow.
func underMaster() bool {
	for _, fd := range []int{master.StatusFD, master.ListenFD} {
		var st syscall.Stat_t
		if syscall.Fstat(fd, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFSOCK {
			return true
		}
	}
	return false
}

// Package daemon assembles tlsmgr from its parts and runs it, either under
// Postfix's master(8) (inherited sockets, status channel, chroot, privilege
// drop) or standalone on a socket of its own.
//
// The start-up order follows Postfix's: read the configuration, start
// logging, open every file (as the mail owner, never as root), take the
// sockets, then chroot and drop privileges, and only then serve. After the
// jail only descriptors opened before it are used.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gotlsmgr/tlsmgr/attr"
	"github.com/gotlsmgr/tlsmgr/config"
	"github.com/gotlsmgr/tlsmgr/maillog"
	"github.com/gotlsmgr/tlsmgr/master"
	"github.com/gotlsmgr/tlsmgr/prng"
	"github.com/gotlsmgr/tlsmgr/server"
	"github.com/gotlsmgr/tlsmgr/tktkey"
)

// ProcessName is Postfix's name for this program, used in the log tag.
const ProcessName = "tlsmgr"

// Main runs the daemon with the command-line arguments args (without the
// program name) and returns the exit status.
func Main(args []string) int {
	d := &daemon{stderr: os.Stderr, pid: os.Getpid()}
	if err := d.run(args); err != nil {
		d.fatal(err)
		return 1
	}
	return 0
}

type daemon struct {
	opts     *master.Options
	params   *config.Params
	hostname string // $myhostname: Postfix puts it in log records
	log      *maillog.Logger
	stderr   io.Writer
	pid      int

	uid, gid  int // the mail owner's, or ours when not root
	asOwner   func(func() error) error
	pool      *prng.Manager
	caches    []server.CacheType
	keys      *tktkey.Manager
	keyStore  io.Closer
	backends  []*backend // Redis clients of the fleet's stores
	listeners []net.Listener
	stdio     net.Conn
	status    *master.Status
	created   []string // files start-up created, removed if it fails
	srv       *server.Server
}

// fatal reports a start-up or run-time failure as one line, through the
// log if it is up, and on stderr unless the log already goes there.
func (d *daemon) fatal(err error) {
	if d.log != nil {
		d.log.Fatal("%v", err)
		if d.opts != nil && (d.opts.StderrLog || d.opts.Listen != "") {
			return
		}
	}
	fmt.Fprintf(d.stderr, "%s: fatal: %v\n", ProcessName, err)
}

func (d *daemon) run(args []string) error {
	opts, err := master.ParseArgs(args)
	if err != nil {
		return err
	}
	d.opts = opts
	standalone := opts.Listen != ""
	if !standalone && !opts.Stdin && !opts.SingleProcess {
		// tlsmgr keeps state in memory: one process only, as in Postfix.
		return errors.New("service tlsmgr requires a process limit of 1")
	}
	// Take over the descriptors master(8) passed before anything opens a
	// file: were one missing, a file of ours would get its number and
	// pass for it. The error waits until it can be logged.
	var inheritErr error
	if !standalone && !opts.Stdin {
		inheritErr = d.inheritSockets()
	}
	if err := d.loadConfig(standalone); err != nil {
		return err
	}
	if err := d.startLog(standalone); err != nil {
		return err
	}
	defer d.log.Close()
	if inheritErr != nil {
		return inheritErr
	}
	for _, w := range d.params.Warnings {
		d.log.WarnAlways("%s", w)
	}
	if err := server.CheckLimits(d.params.ClientLimit); err != nil {
		return err
	}
	if err := d.owner(); err != nil {
		return err
	}
	// A start-up that fails leaves no file behind that it created.
	keepFiles := false
	defer func() {
		d.closeAll()
		if !keepFiles {
			d.removeCreated()
		}
	}()
	// The socket first: a second daemon on a live socket must fail on
	// that, not on the first one's locks.
	if err := d.openSockets(); err != nil {
		return err
	}
	if err := d.openFiles(); err != nil {
		return err
	}
	if (opts.Chroot || opts.DropPrivileges) && os.Geteuid() != 0 {
		return errors.New("-c and -u need root privileges")
	}
	// Nothing after start-up needs root, so root gives it up whether or
	// not -u asked (standalone has no -u to forget): every later file
	// operation is then the mail owner's.
	if os.Geteuid() == 0 {
		if err := master.Jail(d.params.QueueDirectory, d.uid, d.gid, opts.Chroot, true); err != nil {
			// Perhaps half jailed: paths may no longer mean what they did.
			keepFiles = opts.Chroot
			return err
		}
		if opts.Chroot {
			d.log.SetChroot(d.params.QueueDirectory)
		}
	}
	keepFiles = true
	return d.serve()
}

func (d *daemon) loadConfig(standalone bool) error {
	dir := os.Getenv("MAIL_CONFIG")
	var extra map[string]string
	if dir == "" {
		if standalone {
			// No Postfix needed: embedded defaults a normal user can run.
			defaults, err := standaloneDefaults()
			if err != nil {
				return err
			}
			extra = defaults
		} else {
			dir = "/etc/postfix"
		}
	}
	cfg, err := config.Load(dir, extra, d.opts.Overrides)
	if err != nil {
		return err
	}
	service := d.opts.ServiceName
	if service == "" {
		service = ProcessName
	}
	cfg.Set("process_name", ProcessName)
	cfg.Set("process_id", strconv.Itoa(d.pid))
	cfg.Set("service_name", service)
	if d.params, err = cfg.Params(); err != nil {
		return err
	}
	d.hostname, _ = cfg.String("myhostname")
	if extra != nil && d.params.DataDirectory == extra["data_directory"] {
		// Only the built-in state directory is ours to create.
		return makeStateDir(d.params.DataDirectory, d.params.MailOwner)
	}
	return nil
}

// makeStateDir creates the built-in state directory, owned by the account
// that will own the files in it. Its parent is root's (/var/lib) or the
// user's own, so only the last component needs care.
func makeStateDir(dir, owner string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := master.LookupUser(owner)
	if err != nil {
		return fmt.Errorf("mail_owner %s: %w", owner, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s: not a directory", dir)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return nil
}

// standaloneDefaults enables all three caches in memory and keeps state
// in a directory of the user's. Run by root, files still must not belong
// to root: they go to /var/lib/tlsmgr, owned by the postfix account if
// there is one, else by nobody. The directory is created later, and only
// if no setting moves the data directory elsewhere.
func standaloneDefaults() (map[string]string, error) {
	if os.Geteuid() == 0 {
		return rootStandaloneDefaults()
	}
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "state")
		} else {
			dir = os.TempDir()
		}
	}
	dir = filepath.Join(dir, "tlsmgr")
	owner := strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		owner = u.Username
	}
	return memoryDefaults(dir, owner), nil
}

func rootStandaloneDefaults() (map[string]string, error) {
	owner := "postfix"
	if _, _, err := master.LookupUser(owner); err != nil {
		owner = "nobody"
		if _, _, err := master.LookupUser(owner); err != nil {
			return nil, errors.New("running as root needs a postfix or nobody account to own the state files")
		}
	}
	return memoryDefaults("/var/lib/tlsmgr", owner), nil
}

func memoryDefaults(dir, owner string) map[string]string {
	return map[string]string{
		"smtpd_tls_session_cache_database": "memory:smtpd",
		"smtp_tls_session_cache_database":  "memory:smtp",
		"lmtp_tls_session_cache_database":  "memory:lmtp",
		"data_directory":                   dir,
		"queue_directory":                  dir,
		"mail_owner":                       owner,
	}
}

func (d *daemon) startLog(standalone bool) error {
	p := d.params
	o := maillog.Options{
		Tag:      p.SyslogName + "/" + ProcessName,
		Facility: p.SyslogFacility,
		Hostname: d.hostname,
		Verbose:  d.opts.Verbose,
		Exit:     func(int) {}, // Main returns the exit status itself
	}
	switch {
	case standalone:
		o.Stderr = d.stderr
	case p.MaillogFile != "":
		o.Postlog = filepath.Join(p.QueueDirectory, "public", "postlog")
	default:
		o.Syslog = true
	}
	if d.opts.StderrLog {
		o.Stderr = d.stderr
	}
	log, err := maillog.New(o)
	if err != nil {
		return err
	}
	d.log = log
	if err := log.ConnectError(); err != nil {
		log.WarnAlways("%v", err)
	}
	return nil
}

// owner finds the account that must own every file we create.
func (d *daemon) owner() error {
	if os.Geteuid() != 0 {
		d.uid, d.gid = os.Getuid(), os.Getgid()
		d.asOwner = func(fn func() error) error { return fn() }
		return nil
	}
	uid, gid, err := master.LookupUser(d.params.MailOwner)
	if err != nil {
		return fmt.Errorf("mail_owner %s: %w", d.params.MailOwner, err)
	}
	if uid == 0 {
		return fmt.Errorf("mail_owner %s has root privileges: refusing to create files as root", d.params.MailOwner)
	}
	d.uid, d.gid = uid, gid
	d.asOwner = func(fn func() error) error { return master.AsUser(uid, gid, fn) }
	return nil
}

// openSockets takes the client connection of -S, or the standalone socket.
func (d *daemon) openSockets() error {
	switch {
	case d.opts.Stdin:
		c, err := master.StdioConn()
		if err != nil {
			return err
		}
		d.stdio = c
	case d.opts.Listen != "":
		l, err := d.listenStandalone(d.opts.Listen)
		if err != nil {
			return err
		}
		d.listeners = []net.Listener{l}
	}
	return nil
}

// inheritSockets takes the listening sockets and the status channel from
// master(8).
func (d *daemon) inheritSockets() error {
	// Look at every descriptor before taking any over: that opens new
	// ones, which would get the number of a missing one.
	var fst syscall.Stat_t
	if err := syscall.Fstat(master.StatusFD, &fst); err != nil {
		return fmt.Errorf("master(8) status channel: fd %d: %w", master.StatusFD, err)
	}
	n := max(d.opts.SocketCount, 1)
	ls, err := master.InheritedListeners(master.ListenFD, n)
	if err != nil {
		return fmt.Errorf("listening sockets from master(8): %w", err)
	}
	d.listeners = ls
	st, err := master.OpenStatus(master.StatusFD, d.pid, os.Getenv("GENERATION"))
	if err != nil {
		return fmt.Errorf("master(8) status channel: %w", err)
	}
	d.status = st
	return nil
}

// listenStandalone takes over path, refusing if a live daemon answers there
// and removing a stale socket left by one that died. The socket is the
// mail owner's, mode 0660: Postfix's clients run as that account, and no
// other local account may fetch ticket keys or other clients' sessions.
// The owner makes it (and removes it at exit) itself, so nothing root
// does goes through a name in the socket's directory.
func (d *daemon) listenStandalone(path string) (net.Listener, error) {
	var l net.Listener
	err := d.asOwner(func() error {
		var err error
		l, err = bindSocket(path)
		return err
	})
	if errors.Is(err, os.ErrPermission) && os.Geteuid() == 0 {
		return nil, fmt.Errorf("%w (the socket's directory must be writable by mail_owner %s, e.g. install -d -o %s -m 0750 %s)",
			err, d.params.MailOwner, d.params.MailOwner, filepath.Dir(path))
	}
	return l, err
}

func bindSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another tlsmgr is serving there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The mode comes from the umask at bind time: a chmod afterwards
	// would act on whatever the name then is.
	old := syscall.Umask(0o117)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

func (d *daemon) serve() error {
	p := d.params
	limits := attr.Limits{
		MaxValue: p.MaxAttributeSize,
		MaxName:  min(p.MaxAttributeSize, 4096),
		MaxList:  p.MaxRequestSize,
	}
	cfg := server.Config{
		Caches:     d.caches,
		Keys:       d.keys,
		Pool:       d.pool.Pool(),
		Log:        d.log,
		Limits:     limits,
		IPCTimeout: p.IPCTimeout,
		MaxClients: p.ClientLimit,
		BlockingIO: true,
		Stats:      d.stats,
		// A request may make a store call for its cache and, for a
		// ticket name the ring lacks, one for the key.
		StoreTimeout: d.storeTimeout(),
	}
	if d.status != nil {
		cfg.OnAvail = func(avail bool) {
			if err := d.status.Notify(avail); err != nil {
				d.log.Warn("master(8) status update: %v", err)
			}
		}
	}
	d.srv = server.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); d.pool.Run(ctx) }()

	for _, ct := range d.caches {
		if ct.Cache != nil {
			bg.Add(1)
			go func() { defer bg.Done(); ct.Cache.RunSweeper(ctx) }()
		}
	}
	bg.Add(1)
	go func() { defer bg.Done(); d.keys.Run(ctx) }() // returns at once unless the ring is the fleet's

	stop := make(chan string, 1+len(d.listeners))
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	// A broken pipe to a client must not kill us; Go already turns
	// SIGPIPE on sockets into EPIPE, and stderr may be closed by master(8).
	signal.Ignore(syscall.SIGPIPE)
	go func() {
		if sig, ok := <-signals; ok {
			stop <- "signal " + sig.String()
		}
	}()
	if d.status != nil {
		go func() {
			<-d.status.Gone()
			stop <- "master(8) went away"
		}()
	}
	for _, l := range d.listeners {
		go func() {
			if err := d.srv.Serve(l); err != nil && !errors.Is(err, server.ErrServerClosed) {
				stop <- "accept: " + err.Error()
			}
		}()
	}
	if d.stdio != nil {
		d.srv.ServeConn(d.stdio)
		go func() {
			for d.srv.Clients() > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			stop <- "client on stdin/stdout done"
		}()
	}
	if d.opts.Listen != "" {
		d.log.Info("listening on %s", d.opts.Listen)
	}
	why := <-stop
	d.log.Debug(1, "stopping: %s", why)
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if err := d.srv.Shutdown(shutdownCtx); err != nil {
		d.log.Warn("clients still busy at shutdown: %v", err)
	}
	cancel()
	bg.Wait()
	return nil
}

// stats adds the daemon's own figures to stats replies.
func (d *daemon) stats(add func(name, value string)) {
	add("pid", strconv.Itoa(d.pid))
	add("log_warnings_suppressed", strconv.FormatUint(d.log.Suppressed(), 10))
	add("log_records_dropped", strconv.FormatUint(d.log.Dropped(), 10))
	d.keyStats(add)
	d.backendStats(add)
	st := d.pool.Stats()
	add("prng_bytes_served", strconv.FormatUint(st.BytesServed, 10))
	add("prng_reads", strconv.FormatUint(st.Reads, 10))
	add("prng_source", st.Source)
	add("prng_source_ok", boolString(st.SourceOK))
	add("prng_last_reseed", timeString(st.LastReseed))
	add("prng_reseed_failures", strconv.FormatUint(st.ReseedFailures, 10))
	add("prng_source_health_failures", strconv.FormatUint(st.HealthFailures, 10))
	add("prng_os_entropy_failures", strconv.FormatUint(st.OSEntropyFailures, 10))
	add("prng_exchange_file", st.ExchangeFile)
	add("prng_last_exchange_update", timeString(st.LastExchangeUpdate))
	add("prng_exchange_failures", strconv.FormatUint(st.ExchangeFailures, 10))
}

func boolString(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

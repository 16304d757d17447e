package integration

// TestPackageInstall: the tlsmgr-go .deb as an administrator uses it, on
// the default Postfix instance (/etc/postfix: the maintainer scripts act
// on no other) of three Debian releases, the host's and two roots made by
// scripts/debian-root: install (master.cf untouched), tlsmgrctl postfix
// enable, a TLS session cached by our daemon, an upgrade that reloads
// Postfix onto the new daemon and keeps the cache, removal that points
// master.cf back at Postfix's tlsmgr and lists our state files, and purge
// that deletes them and every file of the package, leaving Postfix's own.
// Each target's /etc/postfix is backed up and restored, and what Postfix
// made in its data and queue directories is removed again.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

const (
	pkgName      = "tlsmgr-go"
	pkgDaemon    = "/usr/lib/postfix/sbin/tlsmgr-go"
	pkgCtl       = "/usr/sbin/tlsmgrctl"
	pkgState     = "/var/lib/tlsmgr-go"
	pkgMaillog   = "/var/log/tlsmgr-package-test.log"
	pkgCert      = "/etc/postfix/tlsmgr-package-test-cert.pem"
	pkgKey       = "/etc/postfix/tlsmgr-package-test-key.pem"
	pkgOldTag    = "v0.0.1"
	pkgNewTag    = "v0.0.2"
	pkgOldDeb    = "tlsmgr-go_0.0.1_amd64.deb"
	pkgNewDeb    = "tlsmgr-go_0.0.2_amd64.deb"
	pkgCmdLimit  = 2 * time.Minute // one command in a target
	pkgAptLocked = "DPkg::Lock::Timeout=60"
)

// pkgEnv is the environment of every command in a target: Debian's PATH
// (the roots' programs are found in the root's directories, and dpkg wants
// the sbin directories), no MAIL_CONFIG or TLSMGR_SOCKET (the default
// instance), no question from debconf.
var pkgEnv = sync.OnceValue(func() []string {
	env := os.Environ()
	for _, name := range []string{"PATH", "MAIL_CONFIG", "TLSMGR_SOCKET", "DPKG_ROOT", "DEBIAN_FRONTEND", "LC_ALL"} {
		env = withoutEnv(env, name)
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
})

var (
	masterReload = regexp.MustCompile(`postfix/master\[\d+\]: reload -- version`)
	smtpInet     = regexp.MustCompile(`(?m)^smtp(\s+inet\s)`)
)

func TestPackageInstall(t *testing.T) {
	need(t, true, "postfix", "postconf", "openssl", "go", "chroot", "apt-get", "dpkg", "dpkg-query")
	// Beside TestPostfixEnable: both mostly wait for Postfix and apt.
	t.Parallel()
	start := time.Now()
	debs := buildTestDebs(t)
	t.Logf("packages built in %v", time.Since(start).Round(time.Millisecond))
	cert := t.TempDir()
	cmd := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
		"-subj", "/CN=test.localdomain", "-keyout", filepath.Join(cert, "key.pem"), "-out", filepath.Join(cert, "cert.pem"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	for _, rel := range postfixReleases {
		t.Run(rel.name, func(t *testing.T) {
			t.Parallel()
			root := ""
			if rel.suite != "" {
				root = debianRoot(t, rel.suite)
			}
			testPackageInstall(t, rel.name, root, debs, cert)
		})
	}
}

// buildTestDebs builds the amd64 .deb of pkgOldTag and of pkgNewTag from
// the working tree (scripts/packages) and returns their paths, old first.
func buildTestDebs(t *testing.T) [2]string {
	t.Helper()
	dir := t.TempDir()
	var debs [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for i, b := range []struct{ tag, sub, deb string }{{pkgOldTag, "old", pkgOldDeb}, {pkgNewTag, "new", pkgNewDeb}} {
		debs[i] = filepath.Join(dir, b.sub, b.deb)
		wg.Go(func() {
			cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "packages"))
			cmd.Dir = repoRoot(t)
			cmd.Env = append(os.Environ(), "VERSION="+b.tag, "PACKAGE_ARCHES=amd64", "PACKAGE_FORMATS=deb",
				"PACKAGES_DIR="+filepath.Join(dir, b.sub))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("VERSION=%s scripts/packages: %v\n%s", b.tag, err, out)
			} else if _, err := os.Stat(debs[i]); err != nil {
				errs[i] = fmt.Errorf("VERSION=%s scripts/packages made no %s:\n%s", b.tag, b.deb, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	return debs
}

// pkgTarget is a system the package is tried on: the host, or a Debian
// root under chroot.
type pkgTarget struct {
	t          *testing.T
	root       string // "": the host
	port       int    // the smtpd's, on 127.0.0.1
	stage      string // the root's directory for the .debs, as the host sees it
	transcript strings.Builder
	steps      []string
}

// path is the target's path p as the host sees it.
func (g *pkgTarget) path(p string) string { return filepath.Join(g.root, p) }

// where names the target in messages.
func (g *pkgTarget) where() string {
	if g.root == "" {
		return "the host"
	}
	return g.root
}

func (g *pkgTarget) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(g.port)) }

// exec runs a program of the target (name: a path, or a name on pkgEnv's
// PATH) and returns its output, standard error included, and exit
// status; record puts it into the transcript that a failure shows.
func (g *pkgTarget) exec(record bool, name string, args ...string) (string, int) {
	g.t.Helper()
	cmd := rootCommand(g.root, name, args...)
	cmd.Env = pkgEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // a child left holding the output
	start := time.Now()
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	timer := time.AfterFunc(pkgCmdLimit, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		fmt.Fprintf(&out, "[%v]\n", err)
	}
	if record {
		fmt.Fprintf(&g.transcript, "$ %s (exit %d, %v)\n%s", strings.Join(cmd.Args, " "), code,
			time.Since(start).Round(time.Millisecond), out.String())
	}
	return out.String(), code
}

func (g *pkgTarget) run(name string, args ...string) (string, int) {
	g.t.Helper()
	return g.exec(true, name, args...)
}

// must is run for a command that must succeed.
func (g *pkgTarget) must(name string, args ...string) string {
	g.t.Helper()
	out, code := g.run(name, args...)
	if code != 0 {
		g.t.Fatalf("%s %s in %s: exit %d\n%s", name, strings.Join(args, " "), g.where(), code, out)
	}
	return out
}

// step records how long the step that ends now took.
func (g *pkgTarget) step(name string, since *time.Time) {
	g.steps = append(g.steps, fmt.Sprintf("%s %v", name, time.Since(*since).Round(100*time.Millisecond)))
	*since = time.Now()
}

// status is dpkg's status of the package ("installed", "config-files",
// "not-installed"), "" when dpkg does not know it.
func (g *pkgTarget) status() string {
	g.t.Helper()
	out, code := g.run("dpkg-query", "-W", "-f=${Status}", pkgName)
	f := strings.Fields(out)
	if code != 0 || len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// tlsmgrCommand is the program master.cf's tlsmgr service runs.
func (g *pkgTarget) tlsmgrCommand() string {
	g.t.Helper()
	return strings.Fields(g.must("postconf", "-hF", "tlsmgr/unix/command") + " -")[0]
}

// install installs the .deb with apt-get, from the root's /tmp for a root.
func (g *pkgTarget) install(deb string) string {
	g.t.Helper()
	p := deb
	if g.root != "" {
		if g.stage == "" {
			dir, err := os.MkdirTemp(g.path("/tmp"), "tlsmgr-package-test-")
			if err != nil {
				g.t.Fatal(err)
			}
			g.stage = dir
			g.t.Cleanup(func() { os.RemoveAll(dir) })
		}
		b, err := os.ReadFile(deb)
		if err == nil {
			err = os.WriteFile(filepath.Join(g.stage, filepath.Base(deb)), b, 0o644)
		}
		if err != nil {
			g.t.Fatal(err)
		}
		p = strings.TrimPrefix(filepath.Join(g.stage, filepath.Base(deb)), g.root)
	}
	return g.must("apt-get", "install", "-y", "--no-install-recommends", "-o", pkgAptLocked, p)
}

// stats is our daemon's stats (tlsmgrctl stats -json), nil if it does
// not answer.
func (g *pkgTarget) stats() map[string]any {
	out, code := g.exec(false, pkgCtl, "stats", "-json")
	if code != 0 {
		return nil
	}
	d := json.NewDecoder(strings.NewReader(out))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

// procs are the live processes of the target's default instance (its
// queue directory is the target's /var/spool/postfix).
func (g *pkgTarget) procs() map[int]string {
	return procsOf(g.path("/var/spool/postfix"), "")
}

// daemons maps the instance's tlsmgr-go processes to their programs.
func (g *pkgTarget) daemons() map[int]string {
	found := make(map[int]string)
	for pid, name := range g.procs() {
		if name == pkgName {
			found[pid], _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		}
	}
	return found
}

// runs reports whether a process of the instance named name runs the
// program (a path in the target).
func (g *pkgTarget) runs(name, program string) bool {
	for pid, n := range g.procs() {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); n == name && exe == g.path(program) {
			return true
		}
	}
	return false
}

func (g *pkgTarget) maillog() string {
	b, _ := os.ReadFile(g.path(pkgMaillog))
	return string(b)
}

// handshake is sClientAt against the target's smtpd, failing the test
// unless openssl reports want.
func (g *pkgTarget) handshake(what string, sessOut, sessIn string, wait time.Duration, want string) {
	g.t.Helper()
	got, out, err := sClientAt(g.addr(), []string{"-tls1_2", "-no_ticket"}, sessOut, sessIn, wait)
	if err != nil || got != want {
		g.t.Fatalf("%s: %q (%v), want %s; openssl s_client said:\n%s", what, got, err, want, out)
	}
}

// lockTarget keeps two runs of this test from working on the same target
// at once (they would share /etc/postfix and dpkg's database).
func lockTarget(t *testing.T, name string) {
	t.Helper()
	dir := "/run/lock"
	if _, err := os.Stat(dir); err != nil {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(filepath.Join(dir, "tlsmgr-package-install-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// snapshot lists the paths under the directories (as the host sees them).
func snapshot(dirs ...string) map[string]bool {
	seen := make(map[string]bool)
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				seen[p] = true
			}
			return nil
		})
	}
	return seen
}

// removeNew removes what is under the directories and not in before.
func removeNew(t *testing.T, before map[string]bool, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		var gone []string
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || before[p] {
				return nil
			}
			gone = append(gone, p)
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		})
		for _, p := range gone {
			if err := os.RemoveAll(p); err != nil {
				t.Errorf("cleaning up: %v", err)
			}
		}
	}
}

func testPackageInstall(t *testing.T, name, root string, debs [2]string, cert string) {
	g := &pkgTarget{t: t, root: root, port: freePort(t)}
	lockTarget(t, name)
	began := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("commands run in %s:\n%s", g.where(), g.transcript.String())
		}
		t.Logf("%s: %s; %v in all", g.where(), strings.Join(g.steps, ", "), time.Since(began).Round(100*time.Millisecond))
	})
	since := time.Now()

	// The default instance must be free: not a mail system in use, not
	// the package installed by someone else (or left by a crashed run).
	if _, code := g.run("postfix", "status"); code == 0 {
		if root == "" {
			testenv.Missing(t, "a host whose default Postfix instance (/etc/postfix) is not running: this test reconfigures, starts and stops it")
		}
		t.Fatalf("the default Postfix instance of %s runs (left by a crashed run? chroot %s postfix stop)", root, root)
	}
	if s := g.status(); s != "" && s != "not-installed" {
		if root == "" {
			testenv.Missing(t, "a host without the "+pkgName+" package (dpkg status "+s+"): this test installs and purges it")
		}
		t.Fatalf("%s has the %s package (%s; left by a crashed run? chroot %s dpkg --purge %s)", root, pkgName, s, root, pkgName)
	}

	// Back up /etc/postfix whole, and note what Postfix's data and queue
	// directories hold, to restore both at the end, whatever happens.
	// The backup is not a t.TempDir: it outlives a restore that fails.
	etc := g.path("/etc/postfix")
	if _, err := os.Stat(filepath.Join(etc, "main.cf")); err == nil {
		t.Logf("%s has a main.cf of its own: it is put back at the end", etc)
	}
	keep, err := os.MkdirTemp("", "tlsmgr-package-test-etc-")
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(keep, "postfix")
	if out, err := exec.Command("cp", "-a", etc, backup).CombinedOutput(); err != nil {
		os.RemoveAll(keep)
		t.Fatalf("backing up %s: %v\n%s", etc, err, out)
	}
	t.Logf("%s backed up in %s", etc, backup)
	dirs := []string{g.path("/var/lib/postfix"), g.path("/var/spool/postfix")}
	before := snapshot(dirs...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("maillog of %s:\n%s", g.where(), g.maillog())
		}
		os.Remove(g.path(pkgMaillog))
		err := os.RemoveAll(etc)
		if err == nil {
			var out []byte
			if out, err = exec.Command("cp", "-a", backup, etc).CombinedOutput(); err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
		}
		if err != nil {
			t.Errorf("restoring %s: %v; its backup stays in %s", etc, err, backup)
		} else {
			os.RemoveAll(keep)
		}
		removeNew(t, before, dirs...)
	})

	// Configure the default instance: TLS on a port of its own.
	version := strings.TrimSpace(g.must("postconf", "-dh", "mail_version"))
	compat := "3.6"
	if !postfixAtLeast(version, 3, 6) {
		compat = "2" // Postfix before 3.6 numbers its levels 0, 1, 2
	}
	dist, err := os.ReadFile(g.path("/usr/share/postfix/master.cf.dist"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(smtpInet.FindAllIndex(dist, -1)); n != 1 {
		t.Fatalf("master.cf.dist of %s has %d smtp inet services, want 1", g.where(), n)
	}
	master := smtpInet.ReplaceAll(dist, []byte(fmt.Sprintf("127.0.0.1:%d$1", g.port)))
	mainCF := fmt.Sprintf(`# Written by TestPackageInstall; %s is restored afterwards.
compatibility_level = %s
myhostname = test.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = %s
smtpd_tls_cert_file = %s
smtpd_tls_key_file = %s
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
`, etc, compat, pkgMaillog, pkgCert, pkgKey)
	certPEM, err := os.ReadFile(filepath.Join(cert, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(cert, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"/etc/postfix/main.cf", []byte(mainCF), 0o644},
		{"/etc/postfix/master.cf", master, 0o644},
		{pkgCert, certPEM, 0o644},
		{pkgKey, keyPEM, 0o600},
	} {
		if err := os.WriteFile(g.path(f.path), f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := strings.TrimSpace(g.must("postconf", "-h", "data_directory"))

	// Start it; stop it at the end, after the package is gone (cleanups
	// run last registered first), and see that nothing is left running.
	t.Cleanup(func() {
		g.run("postfix", "stop")
		checkProcsGone(t, "the default Postfix instance of "+g.where(), g.procs)
	})
	g.must("postfix", "start")
	waitFor(t, 20*time.Second, "smtpd to listen on "+g.addr(), func() bool {
		c, err := net.DialTimeout("tcp", g.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// A failed run leaves no package behind.
	t.Cleanup(func() {
		if s := g.status(); s != "" && s != "not-installed" {
			g.run("dpkg", "--purge", pkgName)
		}
	})
	g.step("configure and start Postfix "+version, &since)

	// Install the old version: master.cf is not touched.
	masterBefore, err := os.ReadFile(g.path("/etc/postfix/master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	g.install(debs[0])
	if s := g.status(); s != "installed" {
		t.Fatalf("dpkg status %q after installing %s", s, pkgOldDeb)
	}
	if after, _ := os.ReadFile(g.path("/etc/postfix/master.cf")); !bytes.Equal(after, masterBefore) {
		t.Errorf("installing the package changed master.cf")
	}
	if c := g.tlsmgrCommand(); c != "tlsmgr" {
		t.Errorf("master.cf runs %s after the install, want Postfix's tlsmgr", c)
	}
	if st, err := os.Stat(g.path(pkgDaemon)); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not an executable file after the install (%v)", pkgDaemon, err)
	}
	// The daemon answering is Postfix's: tlsmgrctl's own line is enough.
	if out, _ := g.run(pkgCtl, "version"); !strings.HasPrefix(out, "tlsmgrctl "+pkgOldTag+"\n") {
		t.Errorf("tlsmgrctl version after installing %s:\n%s", pkgOldDeb, out)
	}
	g.step("install", &since)

	// Switch master.cf to tlsmgr-go.
	if out, code := g.run(pkgCtl, "postfix", "enable"); code != 0 {
		t.Fatalf("tlsmgrctl postfix enable: exit %d\n%s", code, out)
	}
	if c := g.tlsmgrCommand(); c != pkgName {
		t.Fatalf("master.cf runs %s after tlsmgrctl postfix enable", c)
	}
	if out, code := g.run(pkgCtl, "postfix", "status", "-q"); code != 0 || out != "" {
		t.Fatalf("tlsmgrctl postfix status -q after enable: exit %d\n%s", code, out)
	}
	g.step("enable", &since)

	// A TLS 1.2 session, cached by our daemon.
	sess := filepath.Join(t.TempDir(), "session.pem")
	g.handshake("the first handshake", sess, "", 1500*time.Millisecond, "New")
	waitFor(t, 20*time.Second, "our daemon to hold the session (smtpd_cache_entries)", func() bool {
		n, _ := strconv.Atoi(fmt.Sprint(g.stats()["smtpd_cache_entries"]))
		return n >= 1
	})
	g.step("session saved", &since)

	// Upgrade: the maintainer script reloads Postfix, master(8) starts
	// the new daemon, and it has the cache of the old one.
	reloads := len(masterReload.FindAllString(g.maillog(), -1))
	g.install(debs[1])
	if s := g.status(); s != "installed" {
		t.Fatalf("dpkg status %q after upgrading to %s", s, pkgNewDeb)
	}
	waitFor(t, 20*time.Second, "the maintainer script's postfix reload in the maillog", func() bool {
		return len(masterReload.FindAllString(g.maillog(), -1)) > reloads
	})
	waitFor(t, 30*time.Second, "tlsmgr-go "+pkgNewTag+" to serve, from the new file", func() bool {
		out, code := g.exec(false, pkgCtl, "version")
		if code != 0 || out != "tlsmgrctl "+pkgNewTag+"\ntlsmgr "+pkgNewTag+"\n" {
			return false
		}
		d := g.daemons()
		for _, exe := range d {
			if exe != g.path(pkgDaemon) { // the old one: "... (deleted)"
				return false
			}
		}
		return len(d) == 1
	})
	if c := g.tlsmgrCommand(); c != pkgName {
		t.Errorf("master.cf runs %s after the upgrade", c)
	}
	g.handshake("resuming the session saved before the upgrade", "", sess, 0, "Reused")
	g.step("upgrade", &since)

	// Remove: master.cf runs Postfix's tlsmgr again, which serves; our
	// state files are listed for purge.
	var files []string
	for _, f := range strings.Split(g.must("dpkg-query", "-L", pkgName), "\n") {
		if f = strings.TrimSpace(f); f != "" && f != "/." {
			files = append(files, f)
		}
	}
	out := g.must("apt-get", "remove", "-y", "-o", pkgAptLocked, pkgName)
	if !strings.Contains(out, "tlsmgr-go: master.cf's tlsmgr service runs Postfix's own tlsmgr again") {
		t.Errorf("apt-get remove did not say that master.cf runs Postfix's tlsmgr again")
	}
	if s := g.status(); s != "config-files" {
		t.Errorf("dpkg status %q after apt-get remove, want config-files", s)
	}
	if c := g.tlsmgrCommand(); c != "tlsmgr" {
		t.Errorf("master.cf runs %s after the removal, want Postfix's tlsmgr", c)
	}
	if w := strings.TrimSpace(g.must("postconf", "-hF", "tlsmgr/unix/wakeup")); w != "1000?" {
		t.Errorf("master.cf's tlsmgr wakeup %q after the removal, want Postfix's 1000?", w)
	}
	for _, p := range []string{pkgDaemon, pkgCtl} {
		if _, err := os.Lstat(g.path(p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there after apt-get remove (%v)", p, err)
		}
	}
	waitFor(t, 20*time.Second, "tlsmgr-go to exit", func() bool { return len(g.daemons()) == 0 })
	if err := startTLSOffered(g.addr()); err != nil {
		t.Errorf("after the removal: %v", err)
	}
	fresh := filepath.Join(t.TempDir(), "fresh.pem")
	g.handshake("a new session after the removal", fresh, "", 1500*time.Millisecond, "New")
	g.handshake("resuming it with Postfix's tlsmgr", "", fresh, 0, "Reused")
	if !g.runs("tlsmgr", "/usr/lib/postfix/sbin/tlsmgr") {
		t.Errorf("Postfix's tlsmgr does not run after the removal: %v", g.procs())
	}
	list, err := os.ReadFile(g.path(pkgState + "/state-files"))
	if err != nil {
		t.Fatalf("after apt-get remove: %v", err)
	}
	state := strings.Fields(string(list))
	ours := dataDir + "/smtpd_scache"
	found := false
	for _, f := range state {
		found = found || f == ours
		if base := filepath.Base(f); strings.HasSuffix(base, ".db") || base == "prng_exch" || !strings.HasPrefix(f, dataDir+"/") {
			t.Errorf("%s/state-files lists %s, not a file of ours", pkgState, f)
		}
		if _, err := os.Lstat(g.path(f)); err != nil {
			t.Errorf("state file %s after apt-get remove: %v", f, err)
		}
	}
	if !found {
		t.Errorf("%s/state-files does not list %s:\n%s", pkgState, ours, list)
	}
	g.step("remove", &since)

	// Purge: nothing of ours is left, Postfix's own files are.
	g.must("apt-get", "purge", "-y", "-o", pkgAptLocked, pkgName)
	script := `for f; do
		if [ -d "$f" ]; then
			case $f in *tlsmgr*) echo "$f" ;; esac
		elif [ -e "$f" ] || [ -L "$f" ]; then
			echo "$f"
		fi
	done`
	if left := strings.TrimSpace(g.must("sh", append([]string{"-c", script, "sh"}, files...)...)); left != "" {
		t.Errorf("files of the package left after the purge:\n%s", left)
	}
	for _, p := range append([]string{pkgState}, state...) {
		if _, err := os.Lstat(g.path(p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there after the purge (%v)", p, err)
		}
	}
	for _, f := range []string{"smtpd_scache.db", "prng_exch"} {
		if _, err := os.Stat(g.path(dataDir + "/" + f)); err != nil {
			t.Errorf("Postfix's %s after the purge: %v", f, err)
		}
	}
	if out, code := g.run("dpkg", "-s", pkgName); code == 0 || !strings.Contains(out, "is not installed") {
		t.Errorf("dpkg -s %s after the purge: exit %d\n%s", pkgName, code, out)
	}
	if _, code := g.run("postfix", "status"); code != 0 {
		t.Errorf("Postfix no longer runs after the purge")
	}
	g.step("purge", &since)
}

// startTLSOffered checks that the smtpd at addr offers STARTTLS after EHLO.
func startTLSOffered(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return fmt.Errorf("EHLO does not offer STARTTLS")
	}
	return c.Quit()
}

// Package integration runs our tlsmgr under a real Postfix (Debian's
// package): master(8) starts it, real smtpd and smtp processes use it, and
// real TLS clients (openssl s_client) prove that sessions are resumed.
package integration

import (
	"bytes"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// need skips a test that lacks root or a program, except in CI, where the
// environment is supposed to have everything and a skip would hide a gap.
func need(t *testing.T, root bool, programs ...string) {
	t.Helper()
	var missing []string
	if root && os.Geteuid() != 0 {
		missing = append(missing, "root privileges")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Missing(t, strings.Join(missing, ", "))
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	return freePortAt(t, "127.0.0.1")
}

// freePortAt is a TCP port free on addr ("0.0.0.0": on every address).
func freePortAt(t *testing.T, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// instance is a throwaway Postfix made by scripts/postfix-instance.
type instance struct {
	t                    *testing.T
	dir                  string // the instance's directory, as the tests see it
	root                 string // the Debian root (scripts/debian-root) whose Postfix runs it; "": the host's
	addr                 string // where both smtpd services listen
	smtpdPort, relayPort int
	env                  []string
}

// instanceOptions changes how newInstanceWith makes an instance; the zero
// value makes newInstance's.
type instanceOptions struct {
	addr      string   // listening address (LISTEN_ADDR); "" is 127.0.0.1
	smtpdPort int      // 0: a free port
	portNames bool     // master.cf names the smtpd services by port alone (SERVICE_NAMES=port)
	settings  []string // main.cf settings made before the first start
	root      string   // a Debian root (scripts/debian-root) whose Postfix runs the instance (POSTFIX_ROOT); "": the host's
}

func newInstance(t *testing.T, tlsmgr string) *instance {
	t.Helper()
	return newInstanceWith(t, tlsmgr, instanceOptions{})
}

func newInstanceWith(t *testing.T, tlsmgr string, o instanceOptions) *instance {
	t.Helper()
	if o.addr == "" {
		o.addr = "127.0.0.1"
	}
	if o.smtpdPort == 0 {
		o.smtpdPort = freePortAt(t, o.addr)
	}
	base := t.TempDir()
	if o.root != "" {
		// Inside the root, where its programs see it; removed after the
		// stop below (cleanups run last registered first).
		var err error
		if base, err = os.MkdirTemp(filepath.Join(o.root, "tmp"), "tlsmgr-test-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(base) })
	}
	in := &instance{t: t, dir: filepath.Join(base, "pfx"), root: o.root, addr: o.addr, smtpdPort: o.smtpdPort, relayPort: freePortAt(t, o.addr)}
	in.env = append(withoutEnv(os.Environ(), "POSTFIX_ROOT"), fmt.Sprintf("SMTPD_PORT=%d", in.smtpdPort), fmt.Sprintf("RELAY_PORT=%d", in.relayPort), "LISTEN_ADDR="+in.addr)
	if o.portNames {
		in.env = append(in.env, "SERVICE_NAMES=port")
	}
	if o.root != "" {
		in.env = append(in.env, "POSTFIX_ROOT="+o.root)
	}
	in.script("create", tlsmgr)
	// Log every cache transaction, so the test can see them.
	in.postconf(append([]string{"smtpd_tls_loglevel=2", "smtp_tls_loglevel=2"}, o.settings...)...)
	in.script("start")
	t.Cleanup(func() {
		in.script("stop")
		waitFor(t, 20*time.Second, "tlsmgr to exit with Postfix", func() bool { return in.tlsmgrPID() == 0 })
		in.checkGone(t)
	})
	waitFor(t, 20*time.Second, "smtpd to listen", func() bool {
		c, err := net.Dial("tcp", in.smtpdAddr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return in
}

// smtpdAddr is the host:port of the instance's smtpd (not the relay's).
func (in *instance) smtpdAddr() string {
	return net.JoinHostPort(in.addr, strconv.Itoa(in.smtpdPort))
}

// withoutEnv is env without the variable name.
func withoutEnv(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// inside is the instance's directory as its Postfix sees it: in.dir, or
// for an instance in a Debian root the same directory within the root.
func (in *instance) inside() string {
	if in.root == "" {
		return in.dir
	}
	return strings.TrimPrefix(in.dir, in.root)
}

// command is the instance's Postfix's program name (postfix, postconf)
// with args: the host's, or the root's under chroot.
func (in *instance) command(name string, args ...string) *exec.Cmd {
	return rootCommand(in.root, name, args...)
}

// rootCommand is the program name with args: the host's (root ""), or the
// Debian root's under chroot.
func rootCommand(root, name string, args ...string) *exec.Cmd {
	if root == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("chroot", append([]string{root, name}, args...)...)
}

func (in *instance) script(args ...string) {
	in.t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(in.t), "scripts", "postfix-instance"), append([]string{in.inside()}, args...)...)
	cmd.Env = in.env
	if out, err := cmd.CombinedOutput(); err != nil {
		in.t.Fatalf("postfix-instance %v: %v\n%s", args, err, out)
	}
}

func (in *instance) postconf(settings ...string) {
	in.t.Helper()
	args := append([]string{"-c", filepath.Join(in.inside(), "etc"), "-e"}, settings...)
	if out, err := in.command("postconf", args...).CombinedOutput(); err != nil {
		in.t.Fatalf("postconf: %v\n%s", err, out)
	}
}

func (in *instance) maillog() string {
	b, _ := os.ReadFile(filepath.Join(in.dir, "maillog"))
	return string(b)
}

// tlsmgrPID finds the tlsmgr master(8) started for this instance: ours
// runs as tlsmgr-test from the instance's daemon_directory.
func (in *instance) tlsmgrPID() int {
	want := filepath.Join(in.dir, "libexec", "tlsmgr-test")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == want {
			return pid
		}
	}
	return 0
}

// procs lists the instance's live processes (pid: name). master(8) and
// every daemon it starts work in the queue directory (the chrooted ones
// also have it as their root), and ours runs from daemon_directory;
// zombies have neither and are left out.
func (in *instance) procs() map[int]string {
	return procsOf(filepath.Join(in.dir, "spool"), in.dir+"/")
}

// procsOf lists the live processes (pid: name) of the Postfix whose queue
// directory is spool (as the host sees it): their working or root
// directory is spool, or (exePrefix not "") their program is under
// exePrefix.
func procsOf(spool, exePrefix string) map[int]string {
	found := make(map[int]string)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if cwd == spool || root == spool || exePrefix != "" && strings.HasPrefix(exe, exePrefix) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			found[pid] = strings.TrimSpace(string(comm))
		}
	}
	return found
}

// checkGone fails the test if a process of the stopped instance is still
// there after a while, and kills it.
func (in *instance) checkGone(t *testing.T) {
	t.Helper()
	checkProcsGone(t, "the stopped instance "+in.dir, in.procs)
}

// checkProcsGone fails the test if procs still lists processes (of what)
// after a while, and kills them.
func checkProcsGone(t *testing.T, what string, procs func() map[int]string) {
	t.Helper()
	var left map[int]string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if left = procs(); len(left) == 0 {
			return
		}
	}
	t.Errorf("processes of %s are still running: %v", what, left)
	for pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// serverPID finds the instance's running tlsmgr server, ours
// (tlsmgr-test) or Postfix's own (tlsmgr).
func (in *instance) serverPID() int {
	for pid, name := range in.procs() {
		if name == "tlsmgr" || name == "tlsmgr-test" {
			return pid
		}
	}
	return 0
}

// mailOwnerUID is the uid of the instance's mail owner (postfix), in the
// host's or the root's account database.
func (in *instance) mailOwnerUID() (string, error) {
	if in.root == "" {
		u, err := user.Lookup("postfix")
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	}
	b, err := os.ReadFile(filepath.Join(in.root, "etc", "passwd"))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 3 && f[0] == "postfix" {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("%s/etc/passwd has no postfix account", in.root)
}

// checkJail reports whether the process pid runs as master.cf says a
// chrooted service of the instance runs: with the queue directory as its
// root directory and every uid the mail owner's.
func (in *instance) checkJail(pid int) error {
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil || root != filepath.Join(in.dir, "spool") {
		return fmt.Errorf("root directory %q (%v), want the queue directory", root, err)
	}
	uid, err := in.mailOwnerUID()
	if err != nil {
		return err
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	uids := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(status))
	if uids == nil || uids[1] != uid || uids[2] != uid || uids[3] != uid {
		return fmt.Errorf("uids %v, want all %s", uids, uid)
	}
	return nil
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// handshake runs openssl s_client with STARTTLS against smtpd, saving the
// session to (or resuming it from) file, and reports "New" or "Reused".
func (in *instance) handshake(t *testing.T, tlsArgs []string, sessOut, sessIn string) string {
	t.Helper()
	return in.handshakeWait(t, tlsArgs, sessOut, sessIn, 1500*time.Millisecond)
}

// handshakeWait is handshake keeping the connection open for wait after
// the handshake. A TLS 1.3 ticket arrives after the handshake, so saving
// one needs a wait; a handshake that only offers a session does not:
// s_client reads nothing from stdin until its handshake is done.
func (in *instance) handshakeWait(t *testing.T, tlsArgs []string, sessOut, sessIn string, wait time.Duration) string {
	t.Helper()
	got, out, err := in.sClient(tlsArgs, sessOut, sessIn, wait)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return got
}

// sClient is handshakeWait's openssl s_client run: its handshake result
// ("New" or "Reused") and output, or an error for no result.
func (in *instance) sClient(tlsArgs []string, sessOut, sessIn string, wait time.Duration) (string, string, error) {
	return sClientAt(in.smtpdAddr(), tlsArgs, sessOut, sessIn, wait)
}

// sClientAt is sClient against the smtpd at addr (host:port).
func sClientAt(addr string, tlsArgs []string, sessOut, sessIn string, wait time.Duration) (string, string, error) {
	args := append([]string{"s_client", "-starttls", "smtp", "-connect", addr}, tlsArgs...)
	if sessOut != "" {
		args = append(args, "-sess_out", sessOut)
	}
	if sessIn != "" {
		args = append(args, "-sess_in", sessIn)
	}
	cmd := exec.Command("openssl", args...)
	// Keep stdin open long enough for TLS 1.3 tickets to arrive, then QUIT.
	pr, pw, _ := os.Pipe()
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", "", err
	}
	pr.Close()
	time.Sleep(wait)
	pw.WriteString("QUIT\r\n")
	pw.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		return "", out.String(), fmt.Errorf("openssl s_client hung")
	}
	m := regexp.MustCompile(`(?m)^(New|Reused), TLSv`).FindStringSubmatch(out.String())
	if m == nil {
		return "", out.String(), fmt.Errorf("no TLS handshake result from openssl")
	}
	return m[1], out.String(), nil
}

func (in *instance) resumes(t *testing.T, tlsArgs ...string) {
	t.Helper()
	sess := filepath.Join(t.TempDir(), "session.pem")
	if got := in.handshake(t, tlsArgs, sess, ""); got != "New" {
		t.Fatalf("first handshake %v: %s, want New", tlsArgs, got)
	}
	if got := in.handshake(t, tlsArgs, "", sess); got != "Reused" {
		t.Fatalf("second handshake %v: %s, want Reused\n%s", tlsArgs, got, in.maillog())
	}
}

// sendMail injects a message in plain text; Postfix relays it over TLS.
func (in *instance) sendMail(t *testing.T) {
	t.Helper()
	c, err := smtp.Dial(in.smtpdAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("send mail: %v", err)
		}
	}
	step(c.Hello("client.test"))
	step(c.Mail("sender@test.localdomain"))
	step(c.Rcpt("rcpt@relay.test"))
	w, err := c.Data()
	step(err)
	_, err = w.Write([]byte("Subject: tlsmgr test\r\n\r\nhello\r\n"))
	step(err)
	step(w.Close())
	step(c.Quit())
}

// delivered counts the deliveries logged to the instance's relay smtpd.
func (in *instance) delivered() int {
	return strings.Count(in.maillog(), "relay="+in.addr+"["+in.addr+"]:"+strconv.Itoa(in.relayPort))
}

// smtpReused reports whether the smtp client logged that it reused a
// cached TLS session with the relay.
func (in *instance) smtpReused() bool {
	a := regexp.QuoteMeta(in.addr)
	return regexp.MustCompile(`postfix/smtp\[\d+\]: ` + a + `\[` + a + `\]:` + strconv.Itoa(in.relayPort) + `: Reusing old session`).MatchString(in.maillog())
}

func TestDropInUnderPostfix(t *testing.T) {
	need(t, true, "postfix", "postconf", "openssl", "go")
	in := newInstance(t, tlsmgrBin) // built by TestMain

	t.Run("smtpd session id cache", func(t *testing.T) {
		in.resumes(t, "-tls1_2", "-no_ticket")
		log := in.maillog()
		for _, want := range []string{"save session", "reloaded session", "postfix/tlsmgr["} {
			if !strings.Contains(log, want) {
				t.Errorf("maillog lacks %q", want)
			}
		}
	})
	t.Run("TLS 1.3 tickets", func(t *testing.T) { in.resumes(t, "-tls1_3") })
	t.Run("TLS 1.2 tickets", func(t *testing.T) { in.resumes(t, "-tls1_2") })

	t.Run("smtp client cache", func(t *testing.T) {
		in.sendMail(t)
		waitFor(t, 30*time.Second, "first delivery", func() bool { return in.delivered() >= 1 })
		if in.smtpReused() {
			t.Fatal("the first delivery already reused a session")
		}
		in.sendMail(t)
		waitFor(t, 30*time.Second, "the second delivery to reuse the session", func() bool {
			return in.smtpReused() &&
				regexp.MustCompile(`postfix/tlsmgr\[\d+\]: lookup smtp session id=smtp&`).MatchString(in.maillog())
		})
	})

	t.Run("ours serves, chrooted, as postfix", func(t *testing.T) {
		pid := in.tlsmgrPID()
		if pid == 0 {
			t.Fatal("our tlsmgr is not running")
		}
		if err := in.checkJail(pid); err != nil {
			t.Error(err)
		}
		uid, err := in.mailOwnerUID()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"prng_exch", "smtpd_scache", "smtp_scache"} {
			fi, err := os.Stat(filepath.Join(in.dir, "data", name))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
			}
			if owner := strconv.Itoa(int(statUID(fi))); owner != uid {
				t.Errorf("%s is owned by uid %s, want postfix", name, owner)
			}
		}
	})

	t.Run("postfix reload", func(t *testing.T) {
		old := in.tlsmgrPID()
		exch := filepath.Join(in.dir, "data", "prng_exch")
		before, _ := os.ReadFile(exch)
		cmd := exec.Command("postfix", "-c", filepath.Join(in.dir, "etc"), "reload")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postfix reload: %v\n%s", err, out)
		}
		waitFor(t, 20*time.Second, "the old tlsmgr to exit", func() bool { return in.tlsmgrPID() != old })
		after, _ := os.ReadFile(exch)
		if len(after) != 1024 || bytes.Equal(before, after) {
			t.Errorf("exchange file not saved at exit: %d bytes, changed %v", len(after), !bytes.Equal(before, after))
		}
		// master(8) starts a new tlsmgr on demand, and it serves.
		in.resumes(t, "-tls1_2", "-no_ticket")
		if in.tlsmgrPID() == 0 {
			t.Fatal("no tlsmgr after reload")
		}
	})

	if strings.Contains(in.maillog(), "panic:") {
		t.Errorf("a panic was logged:\n%s", in.maillog())
	}
}

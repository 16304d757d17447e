// Package daemontest runs the real tlsmgr binary in tests: it builds the
// commands, lays out a throwaway configuration (main.cf, a data directory
// owned by the mail owner, a socket) and starts, signals and watches
// daemons. Files are never created as root: run as root, the mail owner
// is nobody.
package daemontest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
)

// MemoryCaches is a main.cf enabling all three caches in memory.
const MemoryCaches = `smtpd_tls_session_cache_database = memory:smtpd
smtp_tls_session_cache_database = memory:smtp
lmtp_tls_session_cache_database = memory:lmtp
`

// Build builds tlsmgr and tlsmgrctl from the module at root into a new
// directory that other users can enter (tests also run the daemon as
// nobody). The caller removes dir.
func Build(root string) (dir, tlsmgr, tlsmgrctl string, err error) {
	dir, err = os.MkdirTemp("", "tlsmgr-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		return "", "", "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/tlsmgr", "./cmd/tlsmgrctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, filepath.Join(dir, "tlsmgr"), filepath.Join(dir, "tlsmgrctl"), nil
}

// Bins are the commands Main built, in Dir.
type Bins struct{ Dir, Tlsmgr, Tlsmgrctl string }

// Main is the TestMain of the packages that run the binaries: it builds
// them from the module at root (Build), hands them to set, runs the tests,
// removes the binaries and exits with the tests' status, or with status 2
// before any test when the build fails.
func Main(m *testing.M, root string, set func(Bins)) { os.Exit(Run(m, root, set)) }

// Run is Main for a TestMain with more to do after the tests: it returns
// the exit code instead of exiting.
func Run(m *testing.M, root string, set func(Bins)) int {
	dir, tlsmgr, tlsmgrctl, err := Build(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	set(Bins{Dir: dir, Tlsmgr: tlsmgr, Tlsmgrctl: tlsmgrctl})
	return m.Run()
}

// Env is a throwaway configuration: main.cf in Cfg (MAIL_CONFIG), state in
// Data, owned by the mail owner as Postfix wants it, and a socket path.
type Env struct {
	Base, Cfg, Data, Sock string
	Owner                 string
	UID                   int
	settings              []string // -o name=value for every start
}

// NewEnv makes an Env with main.cf holding mainCF. Settings are -o
// name=value pairs for every start; "$DATA" in them stands for Data.
func NewEnv(t testing.TB, mainCF string, settings ...string) *Env {
	t.Helper()
	base := t.TempDir()
	// The mail owner must be able to reach the data directory.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The socket's directory is the mail owner's, who makes the socket.
	run := filepath.Join(base, "run")
	e := &Env{Base: base, Cfg: filepath.Join(base, "etc"), Data: filepath.Join(base, "data"),
		Sock: filepath.Join(run, "tlsmgr.sock"), UID: os.Getuid()}
	for _, d := range []string{e.Cfg, e.Data, run} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		e.Owner = "nobody"
		e.UID, _ = strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{e.Data, run} {
			if err := os.Chown(d, e.UID, gid); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		e.Owner = u.Username
	}
	for _, s := range settings {
		e.settings = append(e.settings, strings.ReplaceAll(s, "$DATA", e.Data))
	}
	e.WriteMainCF(t, mainCF)
	return e
}

// WriteMainCF replaces main.cf.
func (e *Env) WriteMainCF(t testing.TB, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.Cfg, "main.cf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Opts are the -o arguments that keep the daemon inside the temporary
// directory, then the Env's settings, then extra.
func (e *Env) Opts(extra ...string) []string {
	args := []string{
		"-o", "mail_owner=" + e.Owner,
		"-o", "data_directory=" + e.Data,
		"-o", "queue_directory=" + e.Data,
		"-o", "daemon_directory=" + e.Base,
	}
	for _, o := range append(append([]string{}, e.settings...), extra...) {
		args = append(args, "-o", o)
	}
	return args
}

// Environ is the process environment with MAIL_CONFIG and XDG_STATE_HOME
// pointing into the Env.
func (e *Env) Environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAIL_CONFIG=") && !strings.HasPrefix(kv, "XDG_STATE_HOME=") {
			out = append(out, kv)
		}
	}
	return append(out, "MAIL_CONFIG="+e.Cfg, "XDG_STATE_HOME="+e.Base)
}

// Command is bin with args in the Env's environment.
func (e *Env) Command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = e.Environ()
	return cmd
}

// Start runs the daemon bin standalone on Sock with Opts(extra...) and
// waits until it announces the protocol there: the socket is bound before
// the caches are opened, so an accepted connection proves nothing.
func (e *Env) Start(t testing.TB, bin string, extra ...string) *Proc {
	t.Helper()
	p := StartCmd(t, e.Command(bin, append([]string{"-listen", e.Sock}, e.Opts(extra...)...)...))
	p.WaitServing(t, e.Sock)
	return p
}

// CheckStateFile wants path to be a mode 0600 file of the mail owner's.
func (e *Env) CheckStateFile(t testing.TB, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("%s has mode %v, want -rw-------", path, fi.Mode())
	}
	if got := FileOwner(fi); got != e.UID {
		t.Errorf("%s is owned by uid %d, want %d (%s)", path, got, e.UID, e.Owner)
	}
	return fi
}

// FileOwner is the uid owning fi.
func FileOwner(fi os.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }

// Buffer collects a process's output safely while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// WaitCount waits up to limit for n occurrences of s and returns how many
// there are then. A process writes a line before what it reports is
// seen, but the line reaches the buffer through a pipe and a goroutine a
// moment later.
func (b *Buffer) WaitCount(s string, n int, limit time.Duration) int {
	for deadline := time.Now().Add(limit); strings.Count(b.String(), s) < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return strings.Count(b.String(), s)
}

// WaitFor waits up to limit for s and reports whether it came.
func (b *Buffer) WaitFor(s string, limit time.Duration) bool { return b.WaitCount(s, 1, limit) > 0 }

// Proc is a running daemon, killed at the end of the test if still there.
type Proc struct {
	Cmd    *exec.Cmd
	Stderr *Buffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// StartCmd starts cmd, collecting its standard error.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Stderr: &Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p
}

// Done is closed when the process has exited; Err is then Wait's result.
func (p *Proc) Done() <-chan struct{} { return p.done }
func (p *Proc) Err() error            { return p.err }

// WaitServing waits until the daemon announces the protocol on sock.
func (p *Proc) WaitServing(t testing.TB, sock string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !Announces(sock) {
		select {
		case <-p.done:
			t.Fatalf("daemon exited at start-up (%v):\n%s", p.err, p.Stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon does not answer on %s:\n%s", sock, p.Stderr)
		}
	}
}

// Announces reports whether a tlsmgr answers on path.
func Announces(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	l, err := attr.NewReader(c, attr.Limits{}).ReadList()
	if err != nil {
		return false
	}
	v, ok := l.Get("protocol")
	return ok && string(v) == "tlsmgr_protocol"
}

// Wait waits up to limit for the daemon to exit and returns its status.
func (p *Proc) Wait(t testing.TB, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("daemon still running %v later:\n%s", limit, p.Stderr)
	}
	return ExitStatus(t, p.err)
}

// ExitStatus is the exit status Wait's error stands for, 128+N for a
// death by signal N.
func ExitStatus(t testing.TB, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// Signal sends sig to the daemon.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Kill sends SIGKILL, if the daemon still runs, and reaps it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Stop sends SIGTERM and wants exit status 0 within 10 seconds.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
	if st := p.Wait(t, 10*time.Second); st != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", st, p.Stderr)
	}
}

// NoWarnings fails on any warning, error, fatal or panic the daemon logged.
func (p *Proc) NoWarnings(t testing.TB) {
	t.Helper()
	for _, line := range strings.Split(p.Stderr.String(), "\n") {
		for _, bad := range []string{"warning:", "error:", "fatal:", "panic:"} {
			if strings.Contains(line, bad) {
				t.Errorf("daemon logged: %s", line)
			}
		}
	}
}

package integration

// Helpers for the tests that run our tlsmgr binary standalone (-listen)
// as a child process: the PRNG, persistent caches and bounds tests. The
// binaries are built once, in TestMain.

import (
	"bytes"
	"context"
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

	"github.com/gotlsmgr/tlsmgr/client"
)

// Built by TestMain.
var tlsmgrBin, tlsmgrctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tlsmgr-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/tlsmgr", "./cmd/tlsmgrctl")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	tlsmgrBin, tlsmgrctlBin = filepath.Join(dir, "tlsmgr"), filepath.Join(dir, "tlsmgrctl")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// standalone is a configuration for a daemon on a socket of its own:
// main.cf in cfg (MAIL_CONFIG), state in data, owned by the mail owner
// (nobody when we are root: files must never be created as root).
type standalone struct {
	base, cfg, data, sock string
	owner                 string
	uid                   int
	opts                  []string // -o name=value settings for every start
}

func newStandalone(t testing.TB, settings ...string) *standalone {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &standalone{base: base, cfg: filepath.Join(base, "etc"), data: filepath.Join(base, "data"),
		sock: filepath.Join(base, "tlsmgr.sock"), uid: os.Getuid()}
	for _, d := range []string{s.cfg, s.data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		s.owner = "nobody"
		s.uid, _ = strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.data, s.uid, gid); err != nil {
			t.Fatal(err)
		}
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		s.owner = u.Username
	}
	mainCF := "smtpd_tls_session_cache_database = memory:smtpd\n" +
		"smtp_tls_session_cache_database = memory:smtp\n" +
		"lmtp_tls_session_cache_database = memory:lmtp\n"
	if err := os.WriteFile(filepath.Join(s.cfg, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	s.opts = []string{
		"mail_owner=" + s.owner,
		"data_directory=" + s.data,
		"queue_directory=" + s.data,
		"daemon_directory=" + base,
	}
	for _, o := range settings {
		s.opts = append(s.opts, strings.ReplaceAll(o, "$DATA", s.data))
	}
	return s
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemonProc is a running daemon.
type daemonProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

// start runs the daemon with the settings plus extra -o settings and
// waits until it answers on the socket.
func (s *standalone) start(t testing.TB, extra ...string) *daemonProc {
	t.Helper()
	args := []string{"-listen", s.sock}
	for _, o := range append(append([]string{}, s.opts...), extra...) {
		args = append(args, "-o", o)
	}
	cmd := exec.Command(tlsmgrBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAIL_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MAIL_CONFIG="+s.cfg)
	p := &daemonProc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", s.sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-p.done:
			t.Fatalf("daemon exited at start-up (%v):\n%s", p.err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon does not answer on %s:\n%s", s.sock, p.stderr)
		}
	}
	return p
}

// kill sends SIGKILL and reaps the process.
func (p *daemonProc) kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stop sends SIGTERM and wants exit status 0.
func (p *daemonProc) stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon ignores SIGTERM:\n%s", p.stderr)
	}
	if p.err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", p.err, p.stderr)
	}
}

// noWarnings fails on any warning, error, fatal or panic the daemon logged.
func (p *daemonProc) noWarnings(t testing.TB) {
	t.Helper()
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		for _, bad := range []string{"warning:", "error:", "fatal:", "panic:"} {
			if strings.Contains(line, bad) {
				t.Errorf("daemon logged: %s", line)
			}
		}
	}
}

func (s *standalone) client() *client.Client {
	return client.New(s.sock, client.Options{Timeout: 10 * time.Second})
}

// stats returns the daemon's counters as a map.
func (s *standalone) stats(t *testing.T) map[string]string {
	t.Helper()
	c := s.client()
	defer c.Close()
	pairs, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, p := range pairs {
		m[p[0]] = p[1]
	}
	return m
}

func statInt(t *testing.T, st map[string]string, name string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(st[name], 10, 64)
	if err != nil {
		t.Fatalf("stats %s = %q: %v", name, st[name], err)
	}
	return n
}

// checkStateFile wants path to be a mode 0600 file of the mail owner's.
func (s *standalone) checkStateFile(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("%s has mode %v, want -rw-------", path, fi.Mode())
	}
	if got := int(statUID(fi)); got != s.uid {
		t.Errorf("%s is owned by uid %d, want %d (%s)", path, got, s.uid, s.owner)
	}
}

func isNotFound(err error) bool { return errors.Is(err, client.ErrNotFound) }

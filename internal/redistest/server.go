// Package redistest runs real redis-server processes (Debian's package) for
// tests: a single server, a Sentinel set-up and a three-master Cluster, each
// on loopback ports with its files in t.TempDir(), each killed in t.Cleanup.
//
// By default the servers are the host's redis-server. TLSMGR_REDIS
// (FlavourEnv) chooses another of the Flavours for every server of the
// test binary, e.g. TLSMGR_REDIS=trixie-valkey: Debian 13's valkey-server,
// run by chroot in the root scripts/debian-root makes, whose every start
// is checked to be that product and series (INFO server).
//
// Readiness is an event, not a guess: every server is started with
// "supervised systemd" and a private NOTIFY_SOCKET, and counts as started
// when it sends READY=1 (then one PING confirms it). Topologies wait for
// their own conditions (replica in sync, sentinels agreeing, cluster_state:ok)
// by asking the servers.
//
// Servers bind 127.0.0.1 only, so protected-mode is off; nothing is
// persisted (save "", appendonly no).
package redistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// startTimeout bounds one server's start-up; generous because a loaded
// 2-core CI machine running the race detector can be slow to fork.
const startTimeout = 15 * time.Second

// Server is one redis-server (or sentinel) process.
type Server struct {
	Addr string // "127.0.0.1:port"
	Port int
	Dir  string // data directory, kept across Restart

	// TLS is the client configuration for a server started by SingleTLS
	// (nil otherwise); CAFile is the PEM file of the CA that signed it.
	TLS    *tls.Config
	CAFile string

	tb       testing.TB
	flavour  Flavour
	name     string   // for messages: "redis", "sentinel-1", ...
	conf     []string // config lines; the ports are added at each start
	busPort  int      // cluster bus port; 0 unless cluster-enabled, -1 until chosen
	sentinel bool

	mu   sync.Mutex
	proc *process
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
}

// Option changes how a server is started.
type Option func(*Server)

// WithConfig adds redis.conf lines, e.g. "requirepass secret".
func WithConfig(lines ...string) Option {
	return func(s *Server) { s.conf = append(s.conf, lines...) }
}

// Single starts one stand-alone server.
func Single(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return start(t, "redis", opts...)
}

func start(t testing.TB, name string, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, name, opts...)
	s.startFresh()
	return s
}

func newServer(t testing.TB, name string, opts ...Option) *Server {
	t.Helper()
	f := selected(t)
	var dir string
	if root := f.Root(); root == "" {
		dir = t.TempDir()
	} else {
		// The server sees only its root: its files go in the root's /tmp.
		var err error
		if dir, err = os.MkdirTemp(filepath.Join(root, "tmp"), "redistest-"); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		// Registered before Stop, so run after it.
		t.Cleanup(func() {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("redistest: %v", err)
			}
		})
	}
	s := &Server{tb: t, flavour: f, name: name, Dir: dir}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Stop)
	return s
}

// startFresh starts the server on new free ports, choosing again when a
// port was taken between our probe and the server's bind.
func (s *Server) startFresh() {
	s.tb.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		switch {
		case s.busPort == 0:
			s.Port = freePort()
		case s.flavour.ClusterPort:
			s.Port, s.busPort = freePort(), freePort()
		default:
			// Without cluster-port the bus is the port plus 10000.
			s.Port = freePortWithBus()
			s.busPort = s.Port + clusterBusOffset
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		if err = s.launch(true); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		s.tb.Fatalf("redistest: %s: %v\n--- %s log ---\n%s", s.name, err, s.name, s.Log())
	}
}

// Restart stops the server if it runs and starts it again on the same
// port with the same data directory.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var err error
	// The port is ours to keep; a bind failure here means something else
	// took it while the server was down, which a test cannot work around.
	if err = s.launch(false); err != nil {
		s.tb.Fatalf("redistest: restarting %s on %s: %v\n--- %s log ---\n%s", s.name, s.Addr, err, s.name, s.Log())
	}
}

var errAddrInUse = errors.New("address already in use")

func (s *Server) logPath() string  { return filepath.Join(s.Dir, s.name+".log") }
func (s *Server) confPath() string { return filepath.Join(s.Dir, s.name+".conf") }

// serverPath is the host's path p (under s.Dir) as the server sees it:
// the same, or within its root.
func (s *Server) serverPath(p string) string {
	root := s.flavour.Root()
	if root == "" {
		return p
	}
	rel, err := filepath.Rel(root, p)
	if err != nil || !filepath.IsLocal(rel) {
		panic(fmt.Sprintf("redistest: %s is outside the root %s", p, root))
	}
	return "/" + rel
}

// Log returns what the server has written so far, for failure messages.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (s *Server) configText() string {
	var b strings.Builder
	lines := []string{
		"bind 127.0.0.1",
		"protected-mode no",
		`save ""`,
		"appendonly no",
		"supervised systemd",
		"dir " + s.serverPath(s.Dir),
		`logfile ""`,
		"loglevel notice",
	}
	if s.TLS != nil {
		lines = append(lines, "port 0", "tls-port "+strconv.Itoa(s.Port))
	} else {
		lines = append(lines, "port "+strconv.Itoa(s.Port))
	}
	if s.busPort != 0 && s.flavour.ClusterPort {
		lines = append(lines, "cluster-port "+strconv.Itoa(s.busPort))
	}
	for _, l := range append(lines, s.conf...) {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// launch starts the process and waits for READY=1 and a PING. A fresh
// start writes the configuration file; a restart of a sentinel keeps the
// one it rewrote (it records there what it learnt, as a real one would).
func (s *Server) launch(fresh bool) error {
	if fresh || !s.sentinel {
		if err := os.WriteFile(s.confPath(), []byte(s.configText()), 0o600); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, 2)

	// An abstract socket: no path length limit, nothing to clean up.
	var id [8]byte
	_, _ = rand.Read(id[:])
	notifyName := "@redistest-" + hex.EncodeToString(id[:])
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyName, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	defer notify.Close()

	args := []string{s.serverPath(s.confPath())}
	if s.sentinel {
		args = append(args, "--sentinel")
	}
	bin := s.flavour.Binary
	if s.flavour.Root() == "" {
		if bin, err = exec.LookPath(bin); err != nil {
			return err
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.serverPath(s.Dir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The notify socket is abstract: it belongs to the network namespace,
	// which a root shares, not to the file system.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyName)
	// If the test binary dies (a timeout panic), its servers die with it.
	// In a root, the process is still our child (chroot(2) before exec,
	// no chroot command between), so signals and Wait reach the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Chroot: s.flavour.Root()}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-p.done:
		s.mu.Lock()
		s.proc = nil
		s.mu.Unlock()
		b, _ := os.ReadFile(s.logPath())
		if int64(len(b)) >= logStart && bytes.Contains(b[logStart:], []byte("Address already in use")) {
			return errAddrInUse
		}
		return fmt.Errorf("exited during start-up: %v", p.err)
	case <-timer.C:
		s.Stop()
		return fmt.Errorf("not ready after %v", startTimeout)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := s.admin()
	defer c.Close()
	// Any reply will do (NOAUTH from a server with requirepass): it is
	// answering.
	var rerr redis.Error
	if err := c.Ping(ctx).Err(); err != nil && !errors.As(err, &rerr) {
		s.Stop()
		return fmt.Errorf("ready, but PING failed: %w", err)
	}
	if s.flavour.Suite != "" {
		// Every start proves the flavour: a wrong binary fails the test.
		v := s.versionClient()
		defer v.Close()
		report, err := s.flavour.checkServer(ctx, v)
		if err != nil {
			s.Stop()
			return err
		}
		s.tb.Logf("redistest: %s on %s is %s (%s)", s.name, s.Addr, report, s.flavour.Name)
	}
	return nil
}

// versionClient is an admin client that can ask INFO of a server
// configured with requirepass.
func (s *Server) versionClient() *redis.Client {
	o := adminOptions(s.Addr, s.TLS)
	for _, l := range s.conf {
		if pw, ok := strings.CutPrefix(l, "requirepass "); ok {
			o.Password = pw
		}
	}
	return redis.NewClient(o)
}

// admin returns a patient client for set-up commands.
func (s *Server) admin() *redis.Client {
	return adminClient(s.Addr, s.TLS)
}

// Client is a plain client of s, closed when the test ends: how a test
// looks at what Redis holds, past the code under test.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := s.admin()
	t.Cleanup(func() { c.Close() })
	return c
}

// adminOptions are patient and make no extra round trips: the harness's
// own calls are set-up, not what is measured.
func adminOptions(addr string, tlsConf *tls.Config) *redis.Options {
	return &redis.Options{
		Addr:                     addr,
		TLSConfig:                tlsConf,
		DialTimeout:              5 * time.Second,
		ReadTimeout:              5 * time.Second,
		MaxRetries:               -1,
		PoolSize:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

func adminClient(addr string, tlsConf *tls.Config) *redis.Client {
	return redis.NewClient(adminOptions(addr, tlsConf))
}

func (s *Server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.tb.Fatalf("redistest: %s on %s is not running", s.name, s.Addr)
	}
	return s.proc.cmd.Process.Pid
}

// Stop kills the server (SIGKILL: no goodbye to clients, as in a crash)
// and waits until it is gone. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Pause stops the process (SIGSTOP) and returns once the kernel reports it
// stopped: the server then accepts TCP connections (the kernel does) and
// never answers, as a black-holed or hung Redis does.
func (s *Server) Pause() {
	s.tb.Helper()
	s.signalAndWait(syscall.SIGSTOP, true)
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	s.tb.Helper()
	s.signalAndWait(syscall.SIGCONT, false)
}

func (s *Server) signalAndWait(sig syscall.Signal, stopped bool) {
	s.tb.Helper()
	pid := s.pid()
	if err := syscall.Kill(pid, sig); err != nil {
		s.tb.Fatalf("redistest: %v to %s: %v", sig, s.name, err)
	}
	// The signal is delivered asynchronously; /proc shows when it took.
	deadline := time.Now().Add(startTimeout)
	for {
		st, err := procState(pid)
		if err != nil {
			s.tb.Fatalf("redistest: state of %s: %v", s.name, err)
		}
		if (st == 'T') == stopped {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: %s still in state %c after %v", s.name, st, sig)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func procState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("malformed stat %q", b)
	}
	return b[i+2], nil
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// clusterBusOffset is a node's cluster bus port less its port, where the
// server has no cluster-port setting.
const clusterBusOffset = 10000

// freePortWithBus returns a port p for a cluster node without
// cluster-port: p and p+10000 both free a moment ago and not handed out
// before. The kernel's ephemeral ports (32768 and up) leave no room above
// them, so p is drawn from 20000-29999, below them.
func freePortWithBus() int {
	free := func(p int) bool {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		l.Close()
		return true
	}
	for range 1000 {
		var b [2]byte
		_, _ = rand.Read(b[:])
		p := 20000 + (int(b[0])<<8|int(b[1]))%10000
		portsMu.Lock()
		used := ports[p] || ports[p+clusterBusOffset]
		portsMu.Unlock()
		if used || !free(p) || !free(p+clusterBusOffset) {
			continue
		}
		portsMu.Lock()
		used = ports[p] || ports[p+clusterBusOffset]
		ports[p], ports[p+clusterBusOffset] = true, true
		portsMu.Unlock()
		if !used {
			return p
		}
	}
	panic("redistest: no free port pair for a cluster node")
}

// freePort returns a loopback port nobody listened on a moment ago. Ports
// handed out are remembered, so two servers of one test binary never get
// the same one even if the kernel offers it twice.
func freePort() int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(fmt.Sprintf("redistest: no free port: %v", err))
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		used := ports[p]
		ports[p] = true
		portsMu.Unlock()
		if !used {
			return p
		}
	}
}

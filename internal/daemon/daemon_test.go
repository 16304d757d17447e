package daemon_test

// These tests run the real tlsmgr binary as a child process, as an
// administrator or master(8) would: its command line, its signals, its
// exit status, its stderr and the files it leaves behind are what they
// check. The binaries are built once, in TestMain.

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
)

var tlsmgrBin, tlsmgrctlBin string

func TestMain(m *testing.M) {
	daemontest.Main(m, "../..", func(b daemontest.Bins) { tlsmgrBin, tlsmgrctlBin = b.Tlsmgr, b.Tlsmgrctl })
}

const memoryCaches = daemontest.MemoryCaches

// env is a throwaway configuration for the daemon (daemontest.Env).
type env struct{ *daemontest.Env }

func newEnv(t *testing.T, mainCF string) *env { return &env{daemontest.NewEnv(t, mainCF)} }

// start runs a standalone daemon on the env's socket and waits until it
// serves.
func (e *env) start(t *testing.T, extra ...string) *daemontest.Proc {
	t.Helper()
	return e.Start(t, tlsmgrBin, extra...)
}

func (e *env) command(args ...string) *exec.Cmd { return e.Command(tlsmgrBin, args...) }

// listing returns the names in dir.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// ctl runs tlsmgrctl against sock and returns its standard output.
func ctl(t *testing.T, sock string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tlsmgrctlBin, append([]string{"-s", sock, "-timeout", "5s"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tlsmgrctl %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

func TestStandaloneLifeCycle(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t, memoryCaches)
			p := e.start(t)

			seed1 := strings.TrimSpace(ctl(t, e.Sock, "seed", "32"))
			seed2 := strings.TrimSpace(ctl(t, e.Sock, "seed", "32"))
			if len(seed1) != 64 || strings.Trim(seed1, "0123456789abcdef") != "" {
				t.Errorf("tlsmgrctl seed 32 printed %q, want 64 hex digits", seed1)
			}
			if seed1 == seed2 {
				t.Errorf("two seeds are equal: %s", seed1)
			}

			// The exchange file is written at start-up; keep what it holds.
			exch := filepath.Join(e.Data, "prng_exch")
			before, err := os.ReadFile(exch)
			if err != nil {
				t.Fatal(err)
			}
			fiBefore, _ := os.Stat(exch)

			p.Signal(t, sig)
			if st := p.Wait(t, 5*time.Second); st != 0 {
				t.Fatalf("exit status %d after %v, want 0:\n%s", st, sig, p.Stderr)
			}
			if _, err := os.Lstat(e.Sock); !os.IsNotExist(err) {
				t.Errorf("socket %s left behind after %v (%v)", e.Sock, sig, err)
			}
			after, err := os.ReadFile(exch)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != 1024 {
				t.Errorf("exchange file has %d bytes, want 1024", len(after))
			}
			if bytes.Equal(before, after) {
				t.Error("exchange file not rewritten at exit")
			}
			fi := e.CheckStateFile(t, exch)
			if !os.SameFile(fi, fiBefore) {
				t.Error("exchange file replaced by a new inode; Postfix rewrites it in place")
			}
			if s := p.Stderr.String(); strings.Contains(s, "warning:") || strings.Contains(s, "fatal:") {
				t.Errorf("unexpected warnings:\n%s", s)
			}
		})
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	e := newEnv(t, memoryCaches)
	p := e.start(t)
	ctl(t, e.Sock, "update", "smtpd", "id1", os.DevNull)
	p.Signal(t, syscall.SIGKILL)
	p.Wait(t, 5*time.Second)
	if fi, err := os.Lstat(e.Sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("a killed daemon should leave its socket behind: %v", err)
	}
	p = e.start(t)
	if got := strings.TrimSpace(ctl(t, e.Sock, "seed", "16")); len(got) != 32 {
		t.Errorf("seed after restart on a stale socket: %q", got)
	}
	p.Signal(t, syscall.SIGTERM)
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d:\n%s", st, p.Stderr)
	}
}

// oneFatalLine checks that stderr is one line saying "fatal:" and
// naming every string in want.
func oneFatalLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasSuffix(stderr, "\n") || !strings.Contains(lines[0], "fatal: ") {
		t.Errorf("stderr is not one \"fatal:\" line:\n%s", stderr)
		return
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("fatal message does not name %q: %s", w, lines[0])
		}
	}
}

func TestSecondDaemonOnLiveSocket(t *testing.T) {
	// A file cache too: the second daemon must not get as far as waiting
	// for the first one's lock on it.
	e := newEnv(t, memoryCaches)
	first := e.start(t, "smtpd_tls_session_cache_database=btree:"+filepath.Join(e.Data, "smtpd_scache"))
	before := listing(t, e.Data)

	begin := time.Now()
	cmd := e.command(append([]string{"-listen", e.Sock},
		e.Opts("smtpd_tls_session_cache_database=btree:"+filepath.Join(e.Data, "smtpd_scache"))...)...)
	second := daemontest.StartCmd(t, cmd)
	if st := second.Wait(t, 15*time.Second); st == 0 {
		t.Fatal("a second daemon on a live socket exited 0")
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("the second daemon took %v to give up", d.Round(time.Millisecond))
	}
	oneFatalLine(t, second.Stderr.String(), e.Sock)
	if !daemontest.Announces(e.Sock) {
		t.Error("the first daemon no longer answers")
	}
	if after := listing(t, e.Data); !slices.Equal(before, after) {
		t.Errorf("data directory changed from %v to %v", before, after)
	}
	first.Signal(t, syscall.SIGTERM)
	if st := first.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("first daemon: exit status %d:\n%s", st, first.Stderr)
	}
}

func TestRegularFileAtSocketPath(t *testing.T) {
	e := newEnv(t, memoryCaches)
	if err := os.WriteFile(e.Sock, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := daemontest.StartCmd(t, e.command(append([]string{"-listen", e.Sock}, e.Opts()...)...))
	if st := p.Wait(t, 10*time.Second); st == 0 {
		t.Fatal("daemon took over a regular file")
	}
	oneFatalLine(t, p.Stderr.String(), e.Sock, "not a socket")
	if b, err := os.ReadFile(e.Sock); err != nil || string(b) != "precious" {
		t.Errorf("the file at the socket path was changed: %q, %v", b, err)
	}
	if names := listing(t, e.Data); len(names) != 0 {
		t.Errorf("files left in the data directory: %v", names)
	}
}

func TestPolicyFromCommandLine(t *testing.T) {
	e := newEnv(t, memoryCaches)
	p := e.start(t, "smtpd_tls_session_cache_timeout=2h")
	if got := ctl(t, e.Sock, "policy", "smtpd"); got != "cachable=1 timeout=7200\n" {
		t.Errorf("policy smtpd: %q, want cachable=1 timeout=7200", got)
	}
	// An untouched type keeps the default.
	if got := ctl(t, e.Sock, "policy", "smtp"); got != "cachable=1 timeout=3600\n" {
		t.Errorf("policy smtp: %q, want cachable=1 timeout=3600", got)
	}
	p.Signal(t, syscall.SIGTERM)
	p.Wait(t, 5*time.Second)
}

func TestMainCFHonoured(t *testing.T) {
	e := newEnv(t, "")
	// Continuation lines, comments, $name, ${name} and ${name?{...}:{...}}
	// expansion, a parameter used before it is defined, and -o winning.
	e.WriteMainCF(t, fmt.Sprintf(`# test configuration
  # an indented comment
state = %s
data_directory = ${state}
mytime = 3h
smtpd_tls_session_cache_database =
	memory:smtpd
smtpd_tls_session_cache_timeout = $mytime
smtp_tls_session_cache_database = memory:$cache_name
smtp_tls_session_cache_timeout =
    ${mytime?{90m}:{1s}}
cache_name = smtp
lmtp_tls_session_cache_timeout = 1d
tls_random_exchange_name = $(data_directory)/exch.${cache_name:{empty}}
`, e.Data))
	p := daemontest.StartCmd(t, e.command("-listen", e.Sock, "-o", "mail_owner="+e.Owner, "-o", "queue_directory="+e.Data,
		"-o", "lmtp_tls_session_cache_timeout=2d"))
	p.WaitServing(t, e.Sock)

	for typ, want := range map[string]string{
		"smtpd": "cachable=1 timeout=10800\n",
		"smtp":  "cachable=1 timeout=5400\n",
		"lmtp":  "cachable=0 timeout=172800\n", // no database: disabled
	} {
		if got := ctl(t, e.Sock, "policy", typ); got != want {
			t.Errorf("policy %s: %q, want %q", typ, got, want)
		}
	}
	exch := filepath.Join(e.Data, "exch.")
	if !regexp.MustCompile(`(?m)^prng_exchange_file +` + regexp.QuoteMeta(exch) + `$`).MatchString(ctl(t, e.Sock, "stats")) {
		t.Errorf("stats do not name %s as the exchange file", exch)
	}
	p.Signal(t, syscall.SIGTERM)
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d:\n%s", st, p.Stderr)
	}
	e.CheckStateFile(t, exch)
}

// TestBadStartup: bad input at start-up gets one "fatal:" line naming
// the cause and a non-zero exit status, and leaves nothing behind.
func TestBadStartup(t *testing.T) {
	type tc struct {
		name   string
		mainCF string
		args   func(e *env) []string
		files  func(t *testing.T) []*os.File // fds 3... for master mode
		want   []string                      // in the fatal line
	}
	standalone := func(extra ...string) func(e *env) []string {
		return func(e *env) []string {
			var o []string
			for _, x := range extra {
				o = append(o, strings.ReplaceAll(x, "$DATA", e.Data))
			}
			return append([]string{"-listen", e.Sock}, e.Opts(o...)...)
		}
	}
	masterMode := func(flags ...string) func(e *env) []string {
		return func(e *env) []string { return append(flags, e.Opts()...) }
	}
	cases := []tc{
		{name: "main.cf line without =", mainCF: memoryCaches + "this line is broken\n",
			args: standalone(), want: []string{"main.cf, line 4", "this line is broken"}},
		{name: "bad time value", mainCF: memoryCaches,
			args: standalone("smtpd_tls_session_cache_timeout=1x"), want: []string{"smtpd_tls_session_cache_timeout", `"1x"`}},
		{name: "two caches one database", mainCF: memoryCaches,
			args: standalone("smtpd_tls_session_cache_database=btree:$DATA/scache", "smtp_tls_session_cache_database=btree:$DATA/scache"),
			want: []string{"smtp_tls_session_cache_database", "scache"}},
		// The first cache opens fine; the second cannot: the first file,
		// and the exchange file, must not stay behind.
		{name: "unwritable cache directory", mainCF: memoryCaches,
			args: standalone("smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache", "smtp_tls_session_cache_database=btree:/nonexistent/dir/x"),
			want: []string{"btree:/nonexistent/dir/x"}},
		{name: "missing entropy device", mainCF: memoryCaches,
			args: standalone("tls_random_source=dev:/dev/nosuch"), want: []string{"/dev/nosuch"}},
		{name: "unknown cache type", mainCF: memoryCaches,
			args: standalone("smtpd_tls_session_cache_database=foo:bar"), want: []string{"foo:bar", `"foo"`}},
		{name: "ticket key file unusable", mainCF: memoryCaches,
			args: standalone("tlsmgr_ticket_key_persistence=yes", "smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache",
				"tls_random_exchange_name=$DATA/prng_exch", "data_directory=$DATA/nonexistent"),
			want: []string{"ticket key file", "nonexistent"}},
		{name: "client limit beyond the open-file limit", mainCF: memoryCaches,
			args: standalone("tlsmgr_client_limit=2000000000"), want: []string{"tlsmgr_client_limit = 2000000000", "RLIMIT_NOFILE"}},
		{name: "master mode without -l", mainCF: memoryCaches,
			args: masterMode("-t", "unix", "-u"), want: []string{"process limit of 1"}},
		{name: "master mode without fds", mainCF: memoryCaches,
			args: masterMode("-l", "-t", "unix", "-u"), want: []string{"status", "fd 5"}},
		{name: "master mode without status fd", mainCF: memoryCaches,
			args: masterMode("-l", "-t", "unix", "-u"), want: []string{"status", "fd 5"},
			files: func(t *testing.T) []*os.File {
				l, _ := listeningSocket(t)
				return []*os.File{nil, nil, nil, l}
			}},
		{name: "master mode without listening fd", mainCF: memoryCaches,
			args: masterMode("-l", "-t", "unix", "-u"), want: []string{"listening", "fd 6"},
			files: func(t *testing.T) []*os.File {
				a, _ := socketpair(t)
				return []*os.File{nil, nil, a}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, c.mainCF)
			cmd := e.command(c.args(e)...)
			if c.files != nil {
				cmd.ExtraFiles = c.files(t)
			}
			p := daemontest.StartCmd(t, cmd)
			if st := p.Wait(t, 15*time.Second); st == 0 || st > 128 {
				t.Fatalf("exit status %d, want a failure:\n%s", st, p.Stderr)
			}
			oneFatalLine(t, p.Stderr.String(), c.want...)
			if names := listing(t, e.Data); len(names) != 0 {
				t.Errorf("start-up failure left files in the data directory: %v", names)
			}
			if names := listing(t, e.Cfg); !slices.Equal(names, []string{"main.cf"}) {
				t.Errorf("configuration directory holds %v", names)
			}
			if _, err := os.Lstat(e.Sock); !os.IsNotExist(err) {
				t.Errorf("socket %s left behind (%v)", e.Sock, err)
			}
		})
	}
}

// listeningSocket returns a listening UNIX socket at a path of its own,
// as master(8) passes them.
func listeningSocket(t *testing.T) (*os.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "l")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

func socketpair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "socketpair-0"), os.NewFile(uintptr(fds[1]), "socketpair-1")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// startAsMaster starts the daemon with flags as master(8) starts a
// child: the flow pipe on fds 3 and 4, the status channel on 5 and a
// listening socket on 6. It returns the process, master's end of the
// status channel (closing it is "postfix reload or stop") and the path
// the socket listens on.
func startAsMaster(t *testing.T, e *env, flags ...string) (*daemontest.Proc, *os.File, string) {
	t.Helper()
	flowR, flowW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flowR.Close(); flowW.Close() })
	masterEnd, childEnd := socketpair(t)
	t.Cleanup(func() { masterEnd.Close() })
	lf, path := listeningSocket(t)
	cmd := e.command(flags...)
	cmd.Env = append(cmd.Env, "GENERATION=0123")
	cmd.ExtraFiles = []*os.File{flowR, flowW, childEnd, lf}
	p := daemontest.StartCmd(t, cmd)
	childEnd.Close()
	lf.Close()
	return p, masterEnd, path
}

// TestStdinMode: with -S the daemon serves one client on stdin/stdout
// and exits 0 when that client is done.
func TestStdinMode(t *testing.T) {
	e := newEnv(t, memoryCaches)
	ours, theirs := socketpair(t)
	cmd := e.command(append([]string{"-S", "-l"}, e.Opts()...)...)
	cmd.Stdin, cmd.Stdout = theirs, theirs
	p := daemontest.StartCmd(t, cmd)
	theirs.Close()

	conn, err := net.FileConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	ours.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := attr.NewReader(conn, attr.Limits{}), attr.NewWriter(conn)
	l, err := r.ReadList()
	if err != nil {
		t.Fatalf("read announcement: %v\n%s", err, p.Stderr)
	}
	if v, ok := l.Get("protocol"); !ok || string(v) != "tlsmgr_protocol" || len(l) != 1 {
		t.Fatalf("announcement %v, want protocol=tlsmgr_protocol", l)
	}
	for _, size := range []int32{255, 7} {
		w.Str("request", "seed")
		w.Int("size", size)
		w.End()
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		l, err = r.ReadList()
		if err != nil {
			t.Fatalf("read seed reply: %v\n%s", err, p.Stderr)
		}
		if len(l) != 2 || string(l[0].Name) != "status" || string(l[0].Value) != "0" || string(l[1].Name) != "seed" {
			t.Fatalf("seed reply %q", l)
		}
		if seed, err := attr.ParseData("seed", l[1].Value); err != nil || len(seed) != int(size) {
			t.Fatalf("seed of %d bytes (%v), want %d", len(seed), err, size)
		}
	}
	// A policy request too: the caches came from main.cf.
	w.Str("request", "policy")
	w.Str("cache_type", "smtp")
	w.End()
	w.Flush()
	if l, err = r.ReadList(); err != nil || len(l) != 3 || string(l[1].Value) != "1" || string(l[2].Value) != "3600" {
		t.Fatalf("policy reply %q, %v", l, err)
	}
	conn.Close()
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d after the client left, want 0:\n%s", st, p.Stderr)
	}
	if s := p.Stderr.String(); s != "" {
		t.Errorf("stderr: %s", s)
	}
	e.CheckStateFile(t, filepath.Join(e.Data, "prng_exch"))
}

// TestStdinModePipesEOF: with -S on two pipes, as a shell would set it
// up, the daemon serves requests for as long as its client is there, idle
// or not, and exits 0 within a second of end of file on stdin.
func TestStdinModePipesEOF(t *testing.T) {
	e := newEnv(t, memoryCaches)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inW.Close(); outR.Close() })
	cmd := e.command(append([]string{"-S", "-l"}, e.Opts()...)...)
	cmd.Stdin, cmd.Stdout = inR, outW
	p := daemontest.StartCmd(t, cmd)
	inR.Close()
	outW.Close()
	outR.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := attr.NewReader(outR, attr.Limits{}), attr.NewWriter(inW)
	if _, err := r.ReadList(); err != nil {
		t.Fatalf("read announcement: %v\n%s", err, p.Stderr)
	}
	seed := func() {
		t.Helper()
		w.Str("request", "seed")
		w.Int("size", 32)
		w.End()
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		l, err := r.ReadList()
		if err != nil || len(l) != 2 || string(l[0].Value) != "0" || string(l[1].Name) != "seed" {
			t.Fatalf("seed reply %q, %v\n%s", l, err, p.Stderr)
		}
	}
	seed()
	// An idle client is still a client: the daemon waits for it.
	select {
	case <-p.Done():
		t.Fatalf("daemon exited while its -S client was idle (%v):\n%s", p.Err(), p.Stderr)
	case <-time.After(300 * time.Millisecond):
	}
	seed()
	inW.Close()
	eof := time.Now()
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d after end of file on stdin, want 0:\n%s", st, p.Stderr)
	}
	// The exit writes and syncs the PRNG exchange file, which a loaded
	// disk may slow down; a daemon that waits on has failed the Wait.
	if took := time.Since(eof); took > 3*time.Second {
		t.Errorf("daemon exited %v after end of file on stdin, want within 3 seconds", took)
	}
	if l, err := r.ReadList(); err == nil {
		t.Errorf("after the client left, stdout has %q, want end of file", l)
	}
	if s := p.Stderr.String(); s != "" {
		t.Errorf("stderr: %s", s)
	}
	e.CheckStateFile(t, filepath.Join(e.Data, "prng_exch"))
}

// TestClientAgainstBinary drives the daemon with the client package: a
// round trip through every request a Postfix client makes.
func TestClientAgainstBinary(t *testing.T) {
	e := newEnv(t, memoryCaches)
	p := e.start(t)
	c := client.New(e.Sock, client.Options{Timeout: 5 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if err := c.Update(ctx, "smtp", "smtp&[mx.example]:25", []byte("session")); err != nil {
		t.Fatal(err)
	}
	if b, err := c.Lookup(ctx, "smtp", "smtp&[mx.example]:25"); err != nil || string(b) != "session" {
		t.Fatalf("lookup: %q, %v", b, err)
	}
	if _, err := c.Lookup(ctx, "lmtp", "smtp&[mx.example]:25"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("lookup in another cache type: %v, want not found", err)
	}
	k, err := c.TicketKey(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if k2, err := c.TicketKey(ctx, k.Name[:]); err != nil || k2.Name != k.Name {
		t.Fatalf("tktkey by name: %v", err)
	}
	p.Signal(t, syscall.SIGTERM)
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d:\n%s", st, p.Stderr)
	}
}

// TestMasterMode runs the daemon as master(8) does: flow-control pipe on
// fds 3 and 4, status channel on 5, listening socket on 6; as root also
// with -c and -u. It serves through the inherited socket and exits 0,
// saving the PRNG state, when the master end of the status channel closes.
func TestMasterMode(t *testing.T) {
	e := newEnv(t, memoryCaches)
	flags := []string{"-l", "-t", "unix"}
	if os.Geteuid() == 0 {
		flags = append(flags, "-c", "-u")
	}
	p, masterEnd, path := startAsMaster(t, e, append(flags, e.Opts()...)...)
	p.WaitServing(t, path)

	c := client.New(path, client.Options{Timeout: 5 * time.Second})
	if b, err := c.Seed(context.Background(), 100); err != nil || len(b) != 100 {
		t.Fatalf("seed through the inherited socket: %d bytes, %v\n%s", len(b), err, p.Stderr)
	}
	c.Close()
	if os.Geteuid() == 0 {
		pid := p.Cmd.Process.Pid
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || root != e.Data {
			t.Errorf("root directory %q (%v), want %s", root, err, e.Data)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		want := strconv.Itoa(e.UID)
		if !strings.Contains(string(status), "\nUid:\t"+want+"\t"+want+"\t"+want+"\t"+want+"\n") {
			t.Errorf("daemon does not run as uid %s only:\n%s", want, status)
		}
	}
	exch := filepath.Join(e.Data, "prng_exch")
	before, _ := os.ReadFile(exch)
	// "postfix reload" or stop: the master end goes away.
	masterEnd.Close()
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d when the master went away, want 0:\n%s", st, p.Stderr)
	}
	after, _ := os.ReadFile(exch)
	if len(after) != 1024 || bytes.Equal(before, after) {
		t.Errorf("exchange file not saved at exit (%d bytes, changed %v)", len(after), !bytes.Equal(before, after))
	}
	e.CheckStateFile(t, exch)
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the master's socket file was removed: %v", err)
	}
	if s := p.Stderr.String(); s != "" {
		t.Errorf("stderr: %s", s)
	}
}

// TestBuiltinStateDirectory runs the daemon as an ordinary user with no
// main.cf: the built-in defaults create $XDG_STATE_HOME/tlsmgr, but only
// when no setting moves the data directory elsewhere. The socket is the
// user's, mode 0660: other accounts cannot connect.
func TestBuiltinStateDirectory(t *testing.T) {
	e := newEnv(t, memoryCaches)
	state := filepath.Join(e.Data, "xdg")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, sock string, args ...string) {
		t.Helper()
		cmd := exec.Command(tlsmgrBin, append([]string{"-listen", sock}, args...)...)
		cmd.Env = append(e.Environ()[:len(e.Environ())-2], "XDG_STATE_HOME="+state, "HOME="+state)
		if os.Geteuid() == 0 {
			u, _ := user.Lookup("nobody")
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(state, uid, gid)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		p := daemontest.StartCmd(t, cmd)
		p.WaitServing(t, sock)
		fi, err := os.Stat(sock)
		if err != nil || fi.Mode().Perm() != 0o660 || daemontest.FileOwner(fi) != e.UID {
			t.Errorf("socket mode %v owner %d (%v), want 0660 and uid %d", fi.Mode().Perm(), daemontest.FileOwner(fi), err, e.UID)
		}
		p.Signal(t, syscall.SIGTERM)
		if st := p.Wait(t, 10*time.Second); st != 0 {
			t.Fatalf("exit status %d:\n%s", st, p.Stderr)
		}
	}
	other := filepath.Join(e.Data, "elsewhere")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(other, e.UID, -1)
	run(t, filepath.Join(e.Data, "a.sock"), "-o", "data_directory="+other)
	if _, err := os.Stat(filepath.Join(state, "tlsmgr")); !os.IsNotExist(err) {
		t.Fatalf("the built-in state directory was created although data_directory was set: %v", err)
	}
	run(t, filepath.Join(e.Data, "b.sock"))
	fi, err := os.Stat(filepath.Join(state, "tlsmgr", "prng_exch"))
	if err != nil || fi.Size() != 1024 {
		t.Fatalf("built-in state directory not used: %v", err)
	}
}

package maillog

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

var fixedTime = time.Date(2025, time.January, 2, 3, 4, 5, 0, time.Local)

// receiver is a datagram socket standing in for postlogd or /dev/log.
type receiver struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

func newReceiver(t *testing.T, path string) *receiver {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, path: path, conn: conn}
	t.Cleanup(func() { r.conn.Close() })
	return r
}

// next returns the next datagram, failing the test after a timeout.
func (r *receiver) next() string {
	r.t.Helper()
	s, err := r.read(2 * time.Second)
	if err != nil {
		r.t.Fatalf("no datagram: %v", err)
	}
	return s
}

func (r *receiver) read(timeout time.Duration) (string, error) {
	buf := make([]byte, 8192)
	r.conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := r.conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func (r *receiver) expectNone() {
	r.t.Helper()
	if s, err := r.read(50 * time.Millisecond); err == nil {
		r.t.Fatalf("unexpected datagram %q", s)
	}
}

// testLog is a Handler and a logger writing through it.
type testLog struct {
	*Handler
	*slog.Logger
}

func newTestLogger(t *testing.T, opts Options) *testLog {
	t.Helper()
	if opts.Tag == "" {
		opts.Tag = "postfix/tlsmgr"
	}
	if opts.Hostname == "" {
		opts.Hostname = "mail.example.com"
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.now = func() time.Time { return fixedTime }
	t.Cleanup(func() { h.Close() })
	return &testLog{h, slog.New(h)}
}

func TestPostlogRecordFormat(t *testing.T) {
	dir := t.TempDir()
	postlog := newReceiver(t, filepath.Join(dir, "postlog"))
	syslog := newReceiver(t, filepath.Join(dir, "log"))
	l := newTestLogger(t, Options{Postlog: postlog.path, Syslog: true, SyslogPath: syslog.path, Verbose: 1})
	if err := l.ConnectError(); err != nil {
		t.Fatal(err)
	}

	pid := os.Getpid()
	head := fmt.Sprintf("Jan 02 03:04:05 mail postfix/tlsmgr[%d]: ", pid)
	Infof(l.Logger, "hello %s", "world")
	Warnf(l.Logger, "w %d", 1)
	Errorf(l.Logger, "e")
	Debugf(l.Logger, 1, "debug one")
	Debugf(l.Logger, 2, "debug two is suppressed")
	Infof(l.Logger, "100%% done")
	for _, want := range []string{
		head + "hello world",
		head + "warning: w 1",
		head + "error: e",
		head + "debug one",
		head + "100% done",
	} {
		if got := postlog.next(); got != want {
			t.Errorf("datagram\n got %q\nwant %q", got, want)
		}
	}
	postlog.expectNone()
	// Only one logging mode may be active: postlogd would otherwise loop.
	syslog.expectNone()
}

func TestSyslogRecordFormat(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "log"))
	var exitCodes []int
	l := newTestLogger(t, Options{Syslog: true, SyslogPath: rcv.path, Exit: func(c int) { exitCodes = append(exitCodes, c) }})
	pid := os.Getpid()
	Infof(l.Logger, "i")
	Warnf(l.Logger, "w")
	Errorf(l.Logger, "e")
	Fatalf(l.Logger, "f")
	panicf(l.Logger, "p")
	// mail facility (2<<3) | info 6, warning 4, err 3, crit 2, crit 2.
	for _, want := range []string{
		fmt.Sprintf("<22>Jan  2 03:04:05 postfix/tlsmgr[%d]: i", pid),
		fmt.Sprintf("<20>Jan  2 03:04:05 postfix/tlsmgr[%d]: warning: w", pid),
		fmt.Sprintf("<19>Jan  2 03:04:05 postfix/tlsmgr[%d]: error: e", pid),
		fmt.Sprintf("<18>Jan  2 03:04:05 postfix/tlsmgr[%d]: fatal: f", pid),
		fmt.Sprintf("<18>Jan  2 03:04:05 postfix/tlsmgr[%d]: panic: p", pid),
	} {
		if got := rcv.next(); got != want {
			t.Errorf("datagram\n got %q\nwant %q", got, want)
		}
	}
	if fmt.Sprint(exitCodes) != "[1 2]" {
		t.Errorf("exit codes %v, want [1 2]", exitCodes)
	}
}

func TestSyslogFacility(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "log"))
	l := newTestLogger(t, Options{Syslog: true, SyslogPath: rcv.path, Facility: "local3"})
	Warnf(l.Logger, "x")
	if got := rcv.next(); !strings.HasPrefix(got, "<156>") { // 19<<3 | 4
		t.Errorf("got %q, want priority <156>", got)
	}
	if _, err := New(Options{Facility: "nosuch"}); err == nil {
		t.Error("unknown facility accepted")
	}
}

func TestStderrFileFormat(t *testing.T) {
	var buf bytes.Buffer
	l := newTestLogger(t, Options{Stderr: &buf, Hostname: "host"})
	Infof(l.Logger, "one")
	Warnf(l.Logger, "two")
	pid := os.Getpid()
	want := fmt.Sprintf("Jan 02 03:04:05 host postfix/tlsmgr[%d]: one\n"+
		"Jan 02 03:04:05 host postfix/tlsmgr[%d]: warning: two\n", pid, pid)
	if buf.String() != want {
		t.Errorf("stderr\n got %q\nwant %q", buf.String(), want)
	}
}

func TestStderrAlongsideSocket(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	var buf bytes.Buffer
	l := newTestLogger(t, Options{Postlog: rcv.path, Stderr: &buf})
	Errorf(l.Logger, "both")
	got := rcv.next()
	if got+"\n" != buf.String() {
		t.Errorf("socket %q and stderr %q differ", got, buf.String())
	}
}

func TestSanitize(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"a\nb\tc\r\x00d\x7f", "a?b?c??d?"},
		{"caf\u00e9 \u2713", "caf\u00e9 \u2713"},
		{"bad \xff\xfe utf8", "bad ?? utf8"},
		{"c1 \u0085", "c1 ??"},
	} {
		if got := sanitize(c.in); got != c.want {
			t.Errorf("sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := strings.Repeat("x", 3000)
	if got := sanitize(long); len(got) != MaxTextLen {
		t.Errorf("long text kept %d bytes, want %d", len(got), MaxTextLen)
	}
	// A character straddling the limit is dropped whole.
	straddle := strings.Repeat("x", MaxTextLen-1) + "\u00e9"
	if got := sanitize(straddle); len(got) != MaxTextLen-1 {
		t.Errorf("straddling text kept %d bytes, want %d", len(got), MaxTextLen-1)
	}
}

func TestLongRecordTruncated(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	l := newTestLogger(t, Options{Postlog: rcv.path})
	Warnf(l.Logger, "%s", strings.Repeat("y", 5000))
	got := rcv.next()
	if !strings.HasSuffix(got, ": warning: "+strings.Repeat("y", MaxTextLen)) {
		t.Errorf("record of %d bytes not truncated to %d text bytes", len(got), MaxTextLen)
	}
}

// The socket is kept: after chroot the path is unreachable, which removing
// it simulates.
func TestKeepsSocketWhenPathGone(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	l := newTestLogger(t, Options{Postlog: rcv.path})
	if err := os.Remove(rcv.path); err != nil {
		t.Fatal(err)
	}
	Infof(l.Logger, "still here")
	if got := rcv.next(); !strings.HasSuffix(got, ": still here") {
		t.Errorf("got %q", got)
	}
}

func TestDropAndReconnect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postlog")
	rcv := newReceiver(t, path)
	l := newTestLogger(t, Options{Postlog: path})
	l.retryInterval = 20 * time.Millisecond

	// postlogd's socket goes away entirely.
	rcv.conn.Close()
	os.Remove(path)
	start := time.Now()
	Infof(l.Logger, "lost 1")
	Infof(l.Logger, "lost 2")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("logging to a dead socket took %v", d)
	}
	if l.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", l.Dropped())
	}
	if l.ConnectError() == nil {
		t.Error("ConnectError is nil while disconnected")
	}

	rcv2 := newReceiver(t, path)
	time.Sleep(2 * l.retryInterval)
	Infof(l.Logger, "back")
	if got := rcv2.next(); !strings.HasSuffix(got, ": back") {
		t.Errorf("got %q", got)
	}
	if l.ConnectError() != nil {
		t.Errorf("ConnectError after reconnect: %v", l.ConnectError())
	}
}

func TestMissingSocketAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postlog")
	l := newTestLogger(t, Options{Postlog: path})
	if err := l.ConnectError(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ConnectError = %v, want one naming %s", err, path)
	}
	l.retryInterval, l.nextRetry = 0, time.Time{}
	Infof(l.Logger, "dropped")
	rcv := newReceiver(t, path)
	Infof(l.Logger, "delivered")
	if got := rcv.next(); !strings.HasSuffix(got, ": delivered") {
		t.Errorf("got %q", got)
	}
	if l.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", l.Dropped())
	}
}

// A reader that never reads must not stall the callers.
func TestFullQueueDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	l := newTestLogger(t, Options{Postlog: rcv.path})
	const n = 2000
	late := testenv.WatchLateness(t) // a call the machine kept off a core says nothing of the queue
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		Infof(l.Logger, "record %d", i)
		if d := time.Since(t0); d > slowest {
			slowest = d
		}
	}
	total := time.Since(start)
	if limit := 100*time.Millisecond + late.Late(); slowest > limit {
		t.Errorf("slowest call took %v (limit %v)", slowest, limit)
	}
	if total > 5*time.Second {
		t.Errorf("%d calls took %v", n, total)
	}
	if l.Dropped() == 0 {
		t.Error("no records dropped, yet nobody reads")
	}
	// What was queued is intact and in order.
	if got := rcv.next(); !strings.HasSuffix(got, ": record 0") {
		t.Errorf("first queued record %q", got)
	}
}

func TestConcurrentLogging(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	var stderr lockedBuffer
	l := newTestLogger(t, Options{Postlog: rcv.path, Stderr: &stderr})

	const writers, each = 8, 50
	received := make(chan int)
	go func() {
		n := 0
		for {
			if _, err := rcv.read(300 * time.Millisecond); err != nil {
				received <- n
				return
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				Infof(l.Logger, "writer %d record %d", w, i)
			}
		})
	}
	wg.Wait()
	got := <-received
	if uint64(got)+l.Dropped() != writers*each {
		t.Errorf("received %d + dropped %d != %d", got, l.Dropped(), writers*each)
	}
	if lines := strings.Count(stderr.String(), "\n"); lines != writers*each {
		t.Errorf("stderr has %d lines, want %d", lines, writers*each)
	}
}

func TestCloseStopsSocketOutput(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, filepath.Join(dir, "postlog"))
	var buf bytes.Buffer
	l := newTestLogger(t, Options{Postlog: rcv.path, Stderr: &buf})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	Infof(l.Logger, "after close")
	rcv.expectNone()
	if !strings.Contains(buf.String(), "after close") {
		t.Error("stderr output stopped after Close")
	}
}

func TestJailedPath(t *testing.T) {
	for _, c := range []struct{ path, root, want string }{
		{"/var/spool/postfix/public/postlog", "", "/var/spool/postfix/public/postlog"},
		{"/var/spool/postfix/public/postlog", "/var/spool/postfix", "/public/postlog"},
		{"/var/spool/postfix/public/postlog", "/var/spool/postfix/", "/public/postlog"},
		{"/dev/log", "/var/spool/postfix", "/dev/log"},
		{"/var/spool/postfixx/p", "/var/spool/postfix", "/var/spool/postfixx/p"},
	} {
		if got := jailedPath(c.path, c.root); got != c.want {
			t.Errorf("jailedPath(%q, %q) = %q, want %q", c.path, c.root, got, c.want)
		}
	}
}

// A restarted server gets a new socket at the same path: the old
// connection fails and the record goes to the new one at once.
func TestReconnectAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postlog")
	rcv := newReceiver(t, path)
	l := newTestLogger(t, Options{Postlog: path})
	rcv.conn.Close()
	os.Remove(path)
	rcv2 := newReceiver(t, path)
	Infof(l.Logger, "reconnected")
	if got := rcv2.next(); !strings.HasSuffix(got, ": reconnected") {
		t.Errorf("got %q", got)
	}
	if l.Dropped() != 0 {
		t.Errorf("dropped %d, want 0", l.Dropped())
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMatchesRealPostlog has Postfix's own postlog(1) send a record to our
// stand-in postlogd socket, and checks that we produce the same bytes for
// the same time, pid and text.
func TestMatchesRealPostlog(t *testing.T) {
	const postlogCmd = "/usr/sbin/postlog"
	if _, err := os.Stat(postlogCmd); err != nil {
		testenv.Missing(t, "Postfix's postlog(1)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	queue := filepath.Join(dir, "queue")
	for _, d := range []string{conf, filepath.Join(queue, "public")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mainCf := fmt.Sprintf("queue_directory = %s\nmaillog_file = %s/maillog\n"+
		"maillog_file_prefixes = %s\nmyhostname = mail.example.com\n"+
		"compatibility_level = 3.6\n", queue, dir, dir)
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Postfix waits until a just-written main.cf is a little older.
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(filepath.Join(conf, "main.cf"), old, old); err != nil {
		t.Fatal(err)
	}
	rcv := newReceiver(t, filepath.Join(queue, "public", "postlog"))
	text := "hello\tworld \u00e9"
	cmd := exec.Command(postlogCmd, "-c", conf, "-t", "postfix/tlsmgr", "-p", "warning", text)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postlog failed (%v): %s", err, out)
	}
	real := rcv.next()

	// Take time and pid from the real record.
	m := regexp.MustCompile(`^(\w{3} \d\d \d\d:\d\d:\d\d) mail postfix/tlsmgr\[(\d+)\]: `).FindStringSubmatch(real)
	if m == nil {
		t.Fatalf("unexpected real postlog record %q", real)
	}
	stamp, err := time.ParseInLocation("Jan 02 15:04:05", m[1], time.Local)
	if err != nil {
		t.Fatal(err)
	}
	l := newTestLogger(t, Options{Postlog: rcv.path})
	l.now = func() time.Time { return stamp }
	l.pid, _ = strconv.Atoi(m[2])
	Warnf(l.Logger, "%s", text)
	if ours := rcv.next(); ours != real {
		t.Errorf("record differs from Postfix's\n ours %q\nreal %q", ours, real)
	}
}

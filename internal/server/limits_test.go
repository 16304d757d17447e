package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// Tests of the client table, the time limits and Shutdown: what a local
// user who can reach the socket could otherwise use to stop the service.
// TestNetpollConnections runs them again with the netpoller.

const policyOK = ok + " cachable=1 timeout=3600"

var policyReq = wire("request", "policy", "cache_type", "smtpd")

// waitUntil polls cond, failing the test if it does not hold within a
// bound generous enough for a loaded machine.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// table counts the connections in the client table that wait for a
// request (idle) and those reading or answering one (busy).
func (s *Server) table() (idle, busy int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		switch {
		case c.evicted:
		case c.idle.Load() != 0:
			idle++
		default:
			busy++
		}
	}
	return idle, busy
}

func (f *fixture) waitTable(t *testing.T, idle, busy int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d clients are idle and %d busy", idle, busy), func() bool {
		i, b := f.srv.table()
		return i == idle && b == busy
	})
}

func (f *fixture) stat(name string) string {
	for _, p := range f.srv.Stats(context.Background()) {
		if p[0] == name {
			return p[1]
		}
	}
	return "(missing)"
}

// expectEOF checks that the server closed the connection cleanly: end of
// file, not a reset, and nothing else first.
func (r *raw) expectEOF() {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if b, err := r.br.ReadByte(); err != io.EOF {
		r.t.Fatalf("read %q, %v; want end of file", b, err)
	}
}

// dialRefused connects and expects to be closed before the announcement.
func (f *fixture) dialRefused(t *testing.T) {
	t.Helper()
	nc, err := net.Dial("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := nc.Read(make([]byte, 100)); err != io.EOF {
		t.Fatalf("client over the limit: read %d bytes, %v; want end of file", n, err)
	}
}

// drip writes b a byte at a time, every interval, until it is all written
// or a write fails; the channel is closed then.
func drip(nc net.Conn, b string, every time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range len(b) {
			if _, err := nc.Write([]byte{b[i]}); err != nil {
				return
			}
			time.Sleep(every)
		}
	}()
	return done
}

func TestFullTableEvictsLongestIdle(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.MaxClients = 3 })
	a, b, c := f.dial(t), f.dial(t), f.dial(t)
	// b's request makes it more recent than c, which never sent one.
	b.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	f.waitTable(t, 3, 0)
	d := f.dial(t)
	a.expectEOF()
	e := f.dial(t)
	c.expectEOF()
	b.send("request", "policy", "cache_type", "smtp").expect(policyOK)
	d.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	e.send("request", "stats")
	got := e.readList()
	for _, want := range []string{" clients=3 ", " connections_evicted=2 ", " connections_rejected=0 "} {
		if !strings.Contains(got+" ", want) {
			t.Errorf("stats lack %q: %s", want, got)
		}
	}
	f.log.WaitFor(t, "to make room")
}

func TestFullTableRefusesOnlyWhenAllBusy(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = 2
		c.RequestTimeout = time.Minute // the half-sent requests must wait
	})
	a, b := f.dial(t), f.dial(t)
	for _, r := range []*raw{a, b} {
		io.WriteString(r.nc, policyReq[:9])
	}
	f.waitTable(t, 0, 2)
	f.dialRefused(t)
	f.log.WaitFor(t, "none of them idle")
	if got := f.stat("connections_rejected"); got != "1" {
		t.Errorf("connections_rejected = %s, want 1", got)
	}
	// Once a's request is answered it is idle again, and makes room.
	io.WriteString(a.nc, policyReq[9:])
	a.expect(policyOK)
	f.waitTable(t, 1, 1)
	d := f.dial(t)
	a.expectEOF()
	// b, mid-request all along, was left alone.
	io.WriteString(b.nc, policyReq[9:])
	b.expect(policyOK)
	d.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
}

// TestSlowClientsCannotLockOut fills the table with idle clients and
// clients that send a request a byte every 100ms, as a local user could:
// a good client and a stats request are still served, and the slow ones
// are closed once the request time limit is up.
func TestSlowClientsCannotLockOut(t *testing.T) {
	const idle, slow = 3, 3
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = idle + slow
		c.IPCTimeout = time.Minute
		c.RequestTimeout = 2 * time.Second
	})
	for range idle {
		f.dial(t)
	}
	long := wire("request", "lookup", "cache_type", "smtpd", "cache_id", strings.Repeat("x", 500))
	var drips []<-chan struct{}
	for range slow {
		drips = append(drips, drip(f.dial(t).nc, long, 100*time.Millisecond))
	}
	f.waitTable(t, idle, slow)
	good := f.dial(t)
	good.send("request", "update", "cache_type", "smtpd", "cache_id", "id", "session", b64("s")).expect(ok)
	good.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id").expect(ok + " session=" + b64("s"))
	st := f.dial(t)
	st.send("request", "stats")
	if got := st.readList(); !strings.Contains(got, "connections_evicted=2 ") || !strings.Contains(got, "clients=6 ") {
		t.Errorf("stats: %s", got)
	}
	for _, done := range drips {
		select {
		case <-done:
		case <-time.After(30 * time.Second): // the whole request would take 50s
			t.Fatal("a slow client is still sending")
		}
	}
	waitUntil(t, "the slow clients are counted", func() bool { return f.stat("requests_timed_out") == strconv.Itoa(slow) })
	good.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
}

func TestSlowDripClosedAfterRequestTimeout(t *testing.T) {
	const limit = 500 * time.Millisecond
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.IPCTimeout = time.Minute // each byte comes well within it
		c.RequestTimeout = limit
	})
	c := f.dial(t)
	// 300 bytes at 100ms: 30s for the whole request.
	req := wire("request", "lookup", "cache_type", "smtpd", "cache_id", strings.Repeat("x", 260))
	start := time.Now()
	drip(c.nc, req, 100*time.Millisecond)
	c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := c.br.ReadByte()
	elapsed := time.Since(start)
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("slow client read %q, %v; want the connection closed", b, err)
	}
	if elapsed < limit {
		t.Fatalf("closed after %v, before the request time limit %v", elapsed, limit)
	}
	t.Logf("slow client closed after %v", elapsed)
	f.log.WaitFor(t, "not complete within 500ms")
	if got := f.stat("requests_timed_out"); got != "1" {
		t.Errorf("requests_timed_out = %s, want 1", got)
	}
}

// TestClientNotReadingIsClosed: a client that sends requests and never
// reads the replies is closed once a reply has waited RequestTimeout, so
// it cannot hold its slot either.
func TestClientNotReadingIsClosed(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = 1
		c.IPCTimeout = 5 * time.Minute
		c.RequestTimeout = 500 * time.Millisecond
	})
	a := f.dial(t)
	// Far more replies than socket buffers hold.
	go io.WriteString(a.nc, strings.Repeat(wire("request", "seed", "size", "255"), 8000))
	waitUntil(t, "the reply times out", func() bool { return f.log.Has("write reply to") })
	f.waitTable(t, 0, 0)
	f.dial(t).send("request", "policy", "cache_type", "smtpd").expect(policyOK)
}

func TestLargeRequestWithinLargeLimits(t *testing.T) {
	lim := attr.Limits{MaxValue: 8 << 20, MaxList: 8 << 20}
	f := newFixture(t, func(c *Config, st map[string]scache.Store) {
		c.Limits = lim
		st["smtpd"] = memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 64 << 20})
	})
	c := f.dial(t)
	session := strings.Repeat("0123456789abcdef", 15<<14) // 3.75 MiB, 5 MiB in base64
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "big", "session", b64(session)).expect(ok)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "big")
	l, err := attr.NewBufferedReader(c.br, lim).ReadList()
	if err != nil || len(l) != 2 || string(l[1].Value) != b64(session) {
		t.Fatalf("lookup of the 5 MiB session: %d attributes, %v", len(l), err)
	}
}

// threads is the number of OS threads of this process.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		testenv.Missing(t, "/proc/self/status")
	}
	for line := range strings.Lines(string(b)) {
		if v, found := strings.CutPrefix(line, "Threads:"); found {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// TestThreadsBoundedWithManyClients holds far more clients than are
// served with blocking I/O: the OS threads stay near MaxBlocking instead
// of one per client (the runtime dies at 10000), and every client is
// served.
func TestThreadsBoundedWithManyClients(t *testing.T) {
	n := 2500
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	// Two descriptors a client, both ends being ours.
	n = min(n, int(rl.Cur-200)/2)
	if n < 4*DefaultMaxBlocking {
		testenv.Missing(t, fmt.Sprintf("RLIMIT_NOFILE of %d or more (it is %d)", 8*DefaultMaxBlocking+200, rl.Cur))
	}
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.MaxClients = n })
	// Threads are never given back, so count those this test adds.
	before := threads(t)
	clients := make([]*raw, n)
	for i := range clients {
		clients[i] = f.dial(t)
	}
	f.waitTable(t, n, 0)
	added := threads(t) - before
	t.Logf("%d clients, %d blocking: %d more threads", n, f.srv.blocking.Load(), added)
	if bound := DefaultMaxBlocking + 100; added > bound {
		t.Fatalf("%d idle clients added %d threads, bound %d", n, added, bound)
	}
	want := int64(DefaultMaxBlocking)
	if netpoll {
		want = 0
	}
	if f.srv.blocking.Load() != want {
		t.Errorf("%d connections with blocking I/O, want %d", f.srv.blocking.Load(), want)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				c := clients[i]
				if _, err := io.WriteString(c.nc, policyReq); err != nil {
					errs <- err
					return
				}
				l, err := attr.NewBufferedReader(c.br, attr.Limits{}).ReadList()
				if err != nil || len(l) != 3 {
					errs <- fmt.Errorf("client %d: reply %q, %v", i, l, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// gateStore holds every update until released.
type gateStore struct {
	scache.Store
	entered chan struct{}
	release chan struct{}
}

func (s *gateStore) Put(ctx context.Context, id string, e scache.Entry) error {
	s.entered <- struct{}{}
	<-s.release
	return s.Store.Put(ctx, id, e)
}

// TestShutdownAnswersRequestsSent stops the server while requests sit
// unread in the socket buffers (their connections busy with an earlier
// request), while requests are half read, and while clients are idle:
// every request sent before Shutdown is answered, and every client then
// sees end of file, never a reset.
func TestShutdownAnswersRequestsSent(t *testing.T) {
	const queued, halfRead, idle = 20, 5, 5
	gs := &gateStore{Store: memstore.New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20}),
		entered: make(chan struct{}, queued), release: make(chan struct{})}
	f := newFixture(t, func(c *Config, st map[string]scache.Store) {
		st["smtpd"] = gs
		c.RequestTimeout = time.Minute
	})
	var q, h []*raw
	for i := range queued {
		c := f.dial(t)
		c.send("request", "update", "cache_type", "smtpd", "cache_id", strconv.Itoa(i), "session", b64("s"))
		q = append(q, c)
	}
	for range queued {
		<-gs.entered
	}
	// Written whole while the server is busy with the update: unread.
	for _, c := range q {
		c.send("request", "policy", "cache_type", "smtpd")
	}
	for range halfRead {
		c := f.dial(t)
		io.WriteString(c.nc, policyReq[:9])
		h = append(h, c)
	}
	var id []*raw
	for range idle {
		id = append(id, f.dial(t))
	}
	f.waitTable(t, idle, queued+halfRead)
	for _, c := range h {
		io.WriteString(c.nc, policyReq[9:])
	}
	done := make(chan error, 1)
	go func() { done <- f.srv.Shutdown(context.Background()) }()
	for _, c := range id {
		c.expectEOF()
	}
	close(gs.release)
	for _, c := range q {
		c.expect(ok)
		c.expect(policyOK)
		c.expectEOF()
	}
	for _, c := range h {
		c.expect(policyOK)
		c.expectEOF()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestAvailabilityReports(t *testing.T) {
	var mu sync.Mutex
	var got []bool
	calls := func() string { mu.Lock(); defer mu.Unlock(); return fmt.Sprint(got) }
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = 2
		c.RequestTimeout = time.Minute
		c.OnAvail = func(avail bool) { mu.Lock(); got = append(got, avail); mu.Unlock() }
	})
	a, b := f.dial(t), f.dial(t)
	f.waitTable(t, 2, 0)
	// A table full of idle clients makes room: not taken.
	c := f.dial(t)
	a.expectEOF()
	for _, r := range []*raw{b, c} {
		io.WriteString(r.nc, policyReq[:9])
	}
	f.waitTable(t, 0, 2)
	if s := calls(); s != "[]" {
		t.Fatalf("OnAvail calls before any refusal = %s, want none", s)
	}
	f.dialRefused(t)
	waitUntil(t, "taken is reported", func() bool { return calls() == "[false]" })
	io.WriteString(b.nc, policyReq[9:])
	b.expect(policyOK)
	waitUntil(t, "available is reported", func() bool { return calls() == "[false true]" })
	io.WriteString(c.nc, policyReq[9:])
	c.expect(policyOK)
}

func TestCheckLimits(t *testing.T) {
	if err := CheckLimits(1); err != nil {
		t.Fatalf("CheckLimits(1): %v", err)
	}
	if err := checkLimits(1000, 1024); err == nil || !strings.Contains(err.Error(), "tlsmgr_client_limit = 1000") ||
		!strings.Contains(err.Error(), "960 or less") {
		t.Fatalf("1000 clients in 1024 files: %v", err)
	}
	if err := checkLimits(1000, 1064); err != nil {
		t.Fatalf("1000 clients in 1064 files: %v", err)
	}
	if err := checkLimits(10, 32); err == nil || strings.Contains(err.Error(), "or less") {
		t.Fatalf("10 clients in 32 files: %v", err)
	}
}

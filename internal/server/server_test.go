package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// cryptoPool is a stand-in for the PRNG pool.
type cryptoPool struct{ mixed atomic.Int64 }

func (p *cryptoPool) Read(b []byte) (int, error) { return rand.Read(b) }
func (p *cryptoPool) Mix(b []byte)               { p.mixed.Add(int64(len(b))) }

// fakeClock is a settable clock shared by caches and keys.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	srv   *Server
	path  string
	log   *testlog.Recorder
	clock *fakeClock
	pool  *cryptoPool
}

type fixtureOpt func(*Config, map[string]scache.Store)

// logCaches makes fixture caches log every transaction.
var logCaches bool

// netpoll makes fixtures serve through Go's netpoller instead of blocking
// system calls (the daemon's mode); TestNetpollConnections sets it.
var netpoll bool

// TestNetpollConnections runs the connection-handling tests again with the
// netpoller, which serves clients that are not UNIX sockets (-S).
func TestNetpollConnections(t *testing.T) {
	netpoll = true
	defer func() { netpoll = false }()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"wire", TestCacheRequestsOnTheWire},
		{"malformed", TestMalformedRequestsKeepConnection},
		{"oversized", TestOversizedValueKeepsConnection},
		{"wakeup", TestWakeupTrigger},
		{"broken clients", TestBrokenClientsDoNotDisturbOthers},
		{"idle timeout", TestIdleTimeout},
		{"concurrent", TestConcurrentClients},
		{"flood", TestFloodMemoryBounded},
		{"shutdown", TestShutdownFinishesInFlightReplies},
		{"shutdown answers what was sent", TestShutdownAnswersRequestsSent},
		{"eviction", TestFullTableEvictsLongestIdle},
		{"refusal", TestFullTableRefusesOnlyWhenAllBusy},
		{"lockout", TestSlowClientsCannotLockOut},
		{"request timeout", TestSlowDripClosedAfterRequestTimeout},
		{"reply timeout", TestClientNotReadingIsClosed},
		{"large request", TestLargeRequestWithinLargeLimits},
		{"threads", TestThreadsBoundedWithManyClients},
		{"availability", TestAvailabilityReports},
		{"watchdog", TestWatchdogNamesWedgedRequest},
		{"connection ids", TestConnectionIDsInLog},
	} {
		t.Run(tc.name, tc.fn)
	}
}

func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	f := &fixture{log: &testlog.Recorder{}, clock: &fakeClock{now: time.Unix(1_700_000_000, 0)}, pool: &cryptoPool{}}
	lim := scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 20}
	stores := map[string]scache.Store{"smtpd": memstore.New(lim), "smtp": memstore.New(lim)}
	cfg := Config{Pool: f.pool, Log: f.log.Logger(), Limits: attr.DefaultLimits, IPCTimeout: 10 * time.Second, BlockingIO: !netpoll,
		Watchdog: fixtureWatchdog}
	timeout := 3600 * time.Second
	keys, err := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: timeout, Rand: f.pool, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys = keys // an opt may set others, or none
	for _, o := range opts {
		o(&cfg, stores)
	}
	for _, name := range []string{"smtpd", "smtp", "lmtp"} {
		ct := DisabledCache(name, timeout)
		if st := stores[name]; st != nil {
			ct = EnabledCache(scache.New(scache.Config{Name: name, Database: "memory:", Timeout: timeout, Log: f.log.Logger(),
				LogCache: logCaches, Now: f.clock.Now}, st))
		}
		cfg.Caches = append(cfg.Caches, ct)
	}
	f.srv = New(cfg)
	f.path = filepath.Join(t.TempDir(), "tlsmgr")
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return f
}

// raw is a client that speaks bytes, to check the wire format exactly.
type raw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (f *fixture) dial(t *testing.T) *raw {
	t.Helper()
	nc, err := net.Dial("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
	if got := r.readList(); got != "protocol=tlsmgr_protocol" {
		t.Fatalf("announcement = %q", got)
	}
	return r
}

// wire is a request's bytes, as the client would send them.
var wire = attr.Encode

func (r *raw) send(pairs ...string) *raw {
	r.t.Helper()
	if _, err := io.WriteString(r.nc, wire(pairs...)); err != nil {
		r.t.Fatal(err)
	}
	return r
}

// readList returns one list as "name=value name=value".
func (r *raw) readList() string {
	r.t.Helper()
	l, err := attr.NewBufferedReader(r.br, attr.Limits{MaxAttrs: 1000}).ReadList()
	if err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	var parts []string
	for _, a := range l {
		parts = append(parts, string(a.Name)+"="+string(a.Value))
	}
	return strings.Join(parts, " ")
}

func (r *raw) expect(want string) {
	r.t.Helper()
	if got := r.readList(); got != want {
		r.t.Fatalf("reply = %q\nwant    %q", got, want)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const (
	ok   = "status=0"
	err1 = "status=4294967295"
	fail = "status=4294967294"
)

func TestCacheRequestsOnTheWire(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id1").expect(err1 + " session=")
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "id1", "session", b64("secret-session")).expect(ok)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id1").expect(ok + " session=" + b64("secret-session"))
	// Replaced, not duplicated.
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "id1", "session", b64("second")).expect(ok)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id1").expect(ok + " session=" + b64("second"))
	// Caches are separate.
	c.send("request", "lookup", "cache_type", "smtp", "cache_id", "id1").expect(err1 + " session=")
	c.send("request", "delete", "cache_type", "smtpd", "cache_id", "id1").expect(ok)
	c.send("request", "delete", "cache_type", "smtpd", "cache_id", "id1").expect(err1)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id1").expect(err1 + " session=")
	// lmtp is disabled in the fixture, "bogus" is unknown: both -2.
	for _, typ := range []string{"lmtp", "bogus"} {
		c.send("request", "lookup", "cache_type", typ, "cache_id", "x").expect(fail + " session=")
		c.send("request", "update", "cache_type", typ, "cache_id", "x", "session", b64("s")).expect(fail)
		c.send("request", "delete", "cache_type", typ, "cache_id", "x").expect(fail)
	}
	if !f.log.Has(`bogus cache type "bogus"`) {
		t.Errorf("no warning for the bogus cache type:\n%s", f.log.String())
	}
}

func TestPolicy(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "policy", "cache_type", "smtpd").expect(ok + " cachable=1 timeout=3600")
	c.send("request", "policy", "cache_type", "lmtp").expect(ok + " cachable=0 timeout=3600")
	c.send("request", "policy", "cache_type", "nope").expect(fail + " cachable=0 timeout=0")
}

func TestExpiry(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64("A")).expect(ok)
	f.clock.Advance(3600 * time.Second) // written + timeout == now: still valid
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a").expect(ok + " session=" + b64("A"))
	f.clock.Advance(time.Second)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a").expect(err1 + " session=")
	// The expired entry was deleted when met.
	st, _ := f.srv.cfg.Caches[0].Cache.Stats(context.Background())
	if st.Store.Entries != 0 || st.Expired != 1 {
		t.Fatalf("after expired lookup: %+v", st)
	}
}

func TestSeed(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	for _, n := range []int{1, 32, 255} {
		c.send("request", "seed", "size", fmt.Sprint(n))
		got := c.readList()
		enc, found := strings.CutPrefix(got, ok+" seed=")
		if !found {
			t.Fatalf("seed %d: reply %q", n, got)
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(b) != n {
			t.Fatalf("seed %d: %d bytes, %v", n, len(b), err)
		}
	}
	for _, bad := range []string{"0", "256", "4294967295", "-1", "abc", ""} {
		c.send("request", "seed", "size", bad).expect(fail + " seed=")
	}
	if f.pool.mixed.Load() == 0 {
		t.Error("the time of day was not mixed into the pool")
	}
}

func TestTicketKeys(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	key := func(name string) proto.TicketKey {
		t.Helper()
		c.send("request", "tktkey", "keyname", name)
		got := c.readList()
		enc, found := strings.CutPrefix(got, ok+" keybuf=")
		if !found {
			t.Fatalf("tktkey %q: reply %q", name, got)
		}
		b, _ := base64.StdEncoding.DecodeString(enc)
		k, err := proto.ParseTicketKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := f.clock.Now().Unix()
	k1 := key("")
	if k1.Expiry != now+1800-1 {
		t.Fatalf("expiry = %d, want now+T/2-1 = %d", k1.Expiry, now+1799)
	}
	if k2 := key(""); k2 != k1 {
		t.Fatal("a second issue within T/2 returned another key")
	}
	name1 := base64.StdEncoding.EncodeToString(k1.Name[:])
	if k := key(name1); k != k1 {
		t.Fatal("lookup by name returned another key")
	}
	f.clock.Advance(1800 * time.Second) // k1 no longer encrypts
	k3 := key("")
	if k3.Name == k1.Name {
		t.Fatal("no rotation after T/2")
	}
	if k := key(name1); k != k1 {
		t.Fatal("the previous key no longer decrypts within its second half")
	}
	f.clock.Advance(1800 * time.Second) // k1 is past expiry + T/2
	c.send("request", "tktkey", "keyname", name1).expect(err1 + " keybuf=")
	c.send("request", "tktkey", "keyname", b64(strings.Repeat("x", 16))).expect(err1 + " keybuf=")
	c.send("request", "tktkey", "keyname", b64("short")).expect(fail + " keybuf=")
	c.send("request", "tktkey", "keyname", "!!").expect(fail + " keybuf=")
}

func TestTicketsDisabled(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		keys, _ := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: 0, Rand: rand.Reader})
		c.Keys = keys
	})
	f.dial(t).send("request", "tktkey", "keyname", "").expect(err1 + " keybuf=")
}

func TestMalformedRequestsKeepConnection(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	cases := [][]string{
		{},                        // empty list
		{"size", "1"},             // no request attribute
		{"request", "frobnicate"}, // unknown request: Postfix never answers
		{"request", "lookup", "cache_type", "smtpd"},                                            // missing id
		{"request", "lookup", "cache_type", "smtpd", "cache_id", "a", "extra", "1"},             // extra
		{"request", "lookup", "cache_type", "smtpd", "cache_type", "smtpd"},                     // duplicate
		{"request", "update", "cache_type", "smtpd", "cache_id", "a", "session", "not base64!"}, // bad data
	}
	want := []string{fail, fail, fail, fail + " session=", fail + " session=", fail + " session=", fail}
	for i, req := range cases {
		c.send(req...).expect(want[i])
	}
	c.send("request", "policy", "cache_type", "smtpd").expect(ok + " cachable=1 timeout=3600")
	if strings.Contains(f.log.String(), "not base64") {
		t.Error("a request's data value reached the log")
	}
}

func TestOversizedValueKeepsConnection(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	big := strings.Repeat("A", attr.DefaultLimits.MaxValue+4)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", big).expect(fail)
	c.send("request", "seed", "size", "8")
	if got := c.readList(); !strings.HasPrefix(got, ok) {
		t.Fatalf("after oversized request: %q", got)
	}
	f.log.WaitFor(t, "exceeds the size limits")
}

func TestOverCacheBoundIsRefused(t *testing.T) {
	f := newFixture(t, func(_ *Config, st map[string]scache.Store) {
		st["smtpd"] = memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1000})
	})
	c := f.dial(t)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64(strings.Repeat("s", 2000))).expect(err1)
	f.log.WaitFor(t, "over the cache size limit")
}

func TestWakeupTrigger(t *testing.T) {
	f := newFixture(t)
	for _, trigger := range []string{"W", "W\x00"} {
		nc, err := net.Dial("unix", f.path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, trigger)
		nc.(*net.UnixConn).CloseWrite()
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, nc) // the server closes its side
		nc.Close()
	}
	f.log.WaitFor(t, "received master trigger")
	if strings.Contains(f.log.String(), "warning") {
		t.Fatalf("a wakeup trigger caused a warning:\n%s", f.log.String())
	}
}

// master(8)'s trigger keeps its connection open until the server writes
// or closes. A server that does not announce (clients of Postfix 3.5)
// must close it at once: before, it waited for the rest of a request and
// warned "not complete within 10s" at every wake-up, and master warned of
// a read timeout after 100 s.
func TestWakeupTriggerLeftOpen(t *testing.T) {
	for _, greeting := range []Greeting{ClientFirst, ServerFirst} {
		f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.Greeting = greeting })
		nc, err := net.Dial("unix", f.path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, "W\x00")
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		got, err := io.ReadAll(nc) // until the server closes its side
		nc.Close()
		if err != nil {
			t.Fatalf("greeting %v: the server did not close the trigger's connection: %v", greeting, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("greeting %v: closed after %v", greeting, took)
		}
		// Announcing, the server leaves the announcement out when the
		// trigger is there at accept, as for any client that spoke first.
		if len(got) != 0 && (greeting == ClientFirst || string(got) != announcement) {
			t.Errorf("greeting %v: the trigger got %q", greeting, got)
		}
		f.log.WaitFor(t, "received master trigger")
		if strings.Contains(f.log.String(), "warning") {
			t.Errorf("greeting %v: a wakeup trigger caused a warning:\n%s", greeting, f.log.String())
		}
	}
}

func TestBrokenClientsDoNotDisturbOthers(t *testing.T) {
	f := newFixture(t)
	good := f.dial(t)
	// Disappears mid-request.
	c := f.dial(t)
	io.WriteString(c.nc, "request\x00lookup\x00cache_type\x00smt")
	c.nc.Close()
	f.log.WaitFor(t, "end-of-input while reading request")
	// Endless value without NUL.
	c = f.dial(t)
	go func() {
		chunk := []byte(strings.Repeat("z", 64<<10))
		for i := 0; i < 200; i++ {
			if _, err := c.nc.Write(chunk); err != nil {
				return
			}
		}
	}()
	f.log.WaitFor(t, "does not end within the size limits")
	// Garbage.
	c = f.dial(t)
	io.WriteString(c.nc, "\xff\xfe\x00\x01\x02\x00\x00")
	c.expect(fail)
	good.send("request", "policy", "cache_type", "smtp").expect(ok + " cachable=1 timeout=3600")
}

func TestIdleTimeout(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.IPCTimeout = 100 * time.Millisecond })
	c := f.dial(t)
	f.log.WaitFor(t, "timeout while waiting for data")
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after the idle timeout: %v", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := f.dial(t)
			for i := 0; i < 100; i++ {
				id := fmt.Sprintf("g%d-%d", g, i)
				val := b64(id + "-session")
				c.send("request", "update", "cache_type", "smtp", "cache_id", id, "session", val).expect(ok)
				c.send("request", "lookup", "cache_type", "smtp", "cache_id", id).expect(ok + " session=" + val)
			}
		}()
	}
	wg.Wait()
}

// TestFloodMemoryBounded opens many clients that each send a request as
// large as the limits allow and never finish it, then checks that the heap
// stays within what the limits promise and that a good client is served.
func TestFloodMemoryBounded(t *testing.T) {
	lim := attr.Limits{MaxValue: 32 << 10, MaxList: 64 << 10}
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.Limits = lim; c.MaxClients = 300 })
	const clients = 200
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for i := 0; i < clients; i++ {
		c := f.dial(t)
		// Just under the list limit, unterminated: the server must hold it.
		io.WriteString(c.nc, "request\x00update\x00session\x00"+strings.Repeat("Q", 30<<10)+"\x00x\x00"+strings.Repeat("Q", 30<<10))
		// And a client pushing far more than the limits, endlessly.
		if i%4 == 0 {
			go func(nc net.Conn) {
				junk := []byte(strings.Repeat("J", 16<<10))
				for k := 0; k < 64; k++ {
					if _, err := nc.Write(junk); err != nil {
						return
					}
				}
			}(c.nc)
		}
		conns = append(conns, c.nc)
	}
	time.Sleep(300 * time.Millisecond)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	// Per connection: the list buffer, the bufio buffers and the goroutine.
	perConn := int64(lim.MaxList + 16<<10 + 4<<10 + 16<<10)
	if bound := clients * perConn; grown > bound {
		t.Fatalf("heap grew by %d bytes for %d clients, bound %d", grown, clients, bound)
	}
	t.Logf("heap grew by %d KiB for %d flooding clients", grown>>10, clients)
	f.dial(t).send("request", "policy", "cache_type", "smtpd").expect(ok + " cachable=1 timeout=3600")
	for _, nc := range conns {
		nc.Close()
	}
}

// blockingStore lets a test hold a request in flight.
type blockingStore struct {
	scache.Store
	entered chan struct{}
	release chan struct{}
}

func (s *blockingStore) Put(ctx context.Context, id string, e scache.Entry) error {
	close(s.entered)
	<-s.release
	return s.Store.Put(ctx, id, e)
}

func TestShutdownFinishesInFlightReplies(t *testing.T) {
	bs := &blockingStore{Store: memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}),
		entered: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, func(_ *Config, st map[string]scache.Store) { st["smtpd"] = bs })
	idle := f.dial(t)
	c := f.dial(t)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64("s"))
	<-bs.entered
	done := make(chan error)
	go func() { done <- f.srv.Shutdown(context.Background()) }()
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection not closed at shutdown: %v", err)
	}
	select {
	case <-done:
		t.Fatal("shutdown returned while a request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(bs.release)
	c.expect(ok)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", f.path); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

// failingStore fails every call, like an unreachable remote store.
type failingStore struct{ scache.Store }

func (failingStore) Get(context.Context, string) (scache.Entry, error) {
	return scache.Entry{}, fmt.Errorf("connection refused")
}
func (failingStore) Put(context.Context, string, scache.Entry) error {
	return fmt.Errorf("connection refused")
}

func TestStoreErrorsAreMisses(t *testing.T) {
	f := newFixture(t, func(_ *Config, st map[string]scache.Store) {
		st["smtpd"] = failingStore{memstore.New(scache.Limits{MaxEntries: 1, MaxBytes: 1000})}
	})
	c := f.dial(t)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a").expect(err1 + " session=")
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64("s")).expect(err1)
	f.log.WaitFor(t, "connection refused")
}

func TestCacheLoggingNeverShowsSessions(t *testing.T) {
	logCaches = true
	defer func() { logCaches = false }()
	f := newFixture(t)
	c := f.dial(t)
	secret := "TOP-SECRET-SESSION-BYTES"
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "id9", "session", b64(secret)).expect(ok)
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "id9").expect(ok + " session=" + b64(secret))
	log := f.log.String()
	for _, want := range []string{"put smtpd session id=id9 [data 24 bytes]", "lookup smtpd session id=id9", "read smtpd TLS cache entry id9"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, secret) || strings.Contains(log, b64(secret)) {
		t.Fatalf("session bytes reached the log:\n%s", log)
	}
}

func TestStatsRequest(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64("s")).expect(ok)
	c.send("request", "stats")
	got := c.readList()
	for _, want := range []string{ok + " clients=1", "requests_update=1", "smtpd_cache_entries=1", "lmtp_cache_enabled=0"} {
		if !strings.Contains(got, want) {
			t.Errorf("stats lack %q: %s", want, got)
		}
	}
}

// hangingStore never answers until its context ends, like a black-holed
// remote store.
type hangingStore struct {
	scache.Store
	entered chan struct{} // receives a value as each Get starts waiting
}

func (s hangingStore) Get(ctx context.Context, _ string) (scache.Entry, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return scache.Entry{}, ctx.Err()
}

// StoreTimeout bounds every store call from the request's arrival, and a
// Shutdown that gives up waiting cancels the calls still running.
func TestStoreDeadline(t *testing.T) {
	f := newFixture(t, func(cfg *Config, st map[string]scache.Store) {
		cfg.StoreTimeout = 30 * time.Millisecond
		st["smtpd"] = hangingStore{Store: memstore.New(scache.Limits{MaxEntries: 1, MaxBytes: 1000})}
	})
	c := f.dial(t)
	start := time.Now()
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a").expect(err1 + " session=")
	if took := time.Since(start); took < 30*time.Millisecond || took > 2*time.Second {
		t.Errorf("lookup through a hanging store answered after %v, want the 30ms deadline", took)
	}

	entered := make(chan struct{}, 1)
	g := newFixture(t, func(cfg *Config, st map[string]scache.Store) {
		st["smtpd"] = hangingStore{Store: memstore.New(scache.Limits{MaxEntries: 1, MaxBytes: 1000}), entered: entered}
	})
	d := g.dial(t)
	d.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want its deadline", err)
	}
	// The store call was cancelled: the connection's goroutine ends.
	deadline := time.Now().Add(5 * time.Second)
	for g.srv.serving() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a store call outlived Shutdown")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

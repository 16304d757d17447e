package scache_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

var bg = context.Background()

var t0 = time.Unix(1_700_000_000, 250_000_000)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// infos is the lines Recorder.Lines holds after logging each text as info.
func infos(texts []string) []testlog.Line {
	lines := make([]testlog.Line, len(texts))
	for i, text := range texts {
		lines[i] = testlog.Line{Level: "info", Text: text}
	}
	return lines
}

// spyStore wraps a Store, records Expire calls and can fail on demand.
type spyStore struct {
	scache.Store
	mu         sync.Mutex
	fail       error // returned by every call while set
	failDelete bool  // only Delete fails
	expireMax  []int
	onExpire   func(call int) // called inside Expire
}

func (s *spyStore) err() error { s.mu.Lock(); defer s.mu.Unlock(); return s.fail }
func (s *spyStore) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

func (s *spyStore) Get(ctx context.Context, id string) (scache.Entry, error) {
	if err := s.err(); err != nil {
		return scache.Entry{}, err
	}
	return s.Store.Get(ctx, id)
}

func (s *spyStore) Put(ctx context.Context, id string, e scache.Entry) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.Store.Put(ctx, id, e)
}

func (s *spyStore) Delete(ctx context.Context, id string) (bool, error) {
	s.mu.Lock()
	fd := s.failDelete
	s.mu.Unlock()
	if err := s.err(); err != nil || fd {
		return false, errors.Join(err, errBoom)
	}
	return s.Store.Delete(ctx, id)
}

func (s *spyStore) Expire(ctx context.Context, cutoff time.Time, max int, visit func([]byte)) (int, bool, error) {
	s.mu.Lock()
	s.expireMax = append(s.expireMax, max)
	call := len(s.expireMax)
	on := s.onExpire
	s.mu.Unlock()
	if on != nil {
		on(call)
	}
	if err := s.err(); err != nil {
		return 0, false, err
	}
	return s.Store.Expire(ctx, cutoff, max, visit)
}

func (s *spyStore) expireCalls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.expireMax)
}

var errBoom = errors.New("boom: store unavailable")

type fixture struct {
	c     *scache.Cache
	store *spyStore
	clk   *clock
	log   *testlog.Recorder
}

func newCache(t *testing.T, mod func(*scache.Config)) *fixture {
	t.Helper()
	f := &fixture{
		store: &spyStore{Store: memstore.New(scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 20})},
		clk:   &clock{now: t0},
		log:   &testlog.Recorder{},
	}
	cfg := scache.Config{
		Name: "smtpd", Database: "btree:/tmp/smtpd_scache", Timeout: time.Hour,
		Log: f.log.Logger(), Now: f.clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.c = scache.New(cfg, f.store)
	t.Cleanup(func() { f.c.Close() })
	return f
}

func (f *fixture) stats(t *testing.T) scache.Stats {
	t.Helper()
	s, err := f.c.Stats(bg)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}

func (f *fixture) update(t *testing.T, id, session string) {
	t.Helper()
	if err := f.c.Update(bg, id, []byte(session)); err != nil {
		t.Fatalf("Update(%q): %v", id, err)
	}
}

func wantCounters(t *testing.T, s scache.Stats, hits, misses, expired, updates, refused, deletes, swept, storeErrors uint64) {
	t.Helper()
	got := [8]uint64{s.Hits, s.Misses, s.Expired, s.Updates, s.Refused, s.Deletes, s.Swept, s.StoreErrors}
	want := [8]uint64{hits, misses, expired, updates, refused, deletes, swept, storeErrors}
	if got != want {
		t.Errorf("counters hits/misses/expired/updates/refused/deletes/swept/storeErrors = %v, want %v", got, want)
	}
}

func TestLookupHitMissExpired(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "session-a")

	got, err := f.c.Lookup(bg, "a")
	if err != nil || string(got) != "session-a" {
		t.Fatalf("Lookup(a) = %q, %v; want a hit", got, err)
	}
	if _, err := f.c.Lookup(bg, "nope"); err != scache.ErrNotFound {
		t.Fatalf("Lookup(nope) error = %v, want ErrNotFound", err)
	}

	// Valid while written + timeout >= now: the last instant still hits.
	f.clk.Set(t0.Add(time.Hour))
	if got, err := f.c.Lookup(bg, "a"); err != nil || string(got) != "session-a" {
		t.Fatalf("Lookup at written+timeout = %q, %v; want a hit", got, err)
	}
	wantCounters(t, f.stats(t), 2, 1, 0, 1, 0, 0, 0, 0)

	// One nanosecond later it is gone, and deleted from the store.
	f.clk.Set(t0.Add(time.Hour + time.Nanosecond))
	if got, err := f.c.Lookup(bg, "a"); !errors.Is(err, scache.ErrNotFound) || got != nil {
		t.Fatalf("Lookup after expiry = %q, %v; want ErrNotFound", got, err)
	}
	if _, err := f.store.Store.Get(bg, "a"); !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("expired entry still in the store after Lookup met it (Get error %v)", err)
	}
	s := f.stats(t)
	wantCounters(t, s, 2, 2, 1, 1, 0, 0, 0, 0)
	if s.Store.Entries != 0 {
		t.Errorf("store has %d entries, want 0", s.Store.Entries)
	}
	if s.Name != "smtpd" || s.Timeout != time.Hour {
		t.Errorf("Stats name/timeout = %q/%v", s.Name, s.Timeout)
	}

	// A second miss on the same id is an ordinary miss, not another expiry.
	if _, err := f.c.Lookup(bg, "a"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("Lookup = %v, want ErrNotFound", err)
	}
	wantCounters(t, f.stats(t), 2, 3, 1, 1, 0, 0, 0, 0)
}

// Update stamps the entry with the cache's clock, and a rewrite restarts
// the entry's lifetime.
func TestUpdateUsesClockAndReplaces(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "v1")
	e, err := f.store.Store.Get(bg, "a")
	if err != nil || !e.Written.Equal(t0) {
		t.Fatalf("stored entry written %v (err %v), want %v", e.Written, err, t0)
	}
	f.clk.Advance(50 * time.Minute)
	f.update(t, "a", "v2")
	f.clk.Advance(50 * time.Minute) // 100 min after the first write, 50 after the second
	if got, err := f.c.Lookup(bg, "a"); err != nil || string(got) != "v2" {
		t.Fatalf("Lookup = %q, %v; want v2", got, err)
	}
	wantCounters(t, f.stats(t), 1, 0, 0, 2, 0, 0, 0, 0)
}

func TestDeleteCounters(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "x")
	found, err := f.c.Delete(bg, "a")
	if !found || err != nil {
		t.Fatalf("Delete(a) = %v, %v; want true", found, err)
	}
	found, err = f.c.Delete(bg, "a")
	if found || err != nil {
		t.Fatalf("second Delete(a) = %v, %v; want false, nil", found, err)
	}
	if _, err := f.c.Lookup(bg, "a"); !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("Lookup after Delete = %v, want ErrNotFound", err)
	}
	wantCounters(t, f.stats(t), 0, 1, 0, 1, 0, 1, 0, 0)
}

func TestTooLargePassesThrough(t *testing.T) {
	f := &fixture{clk: &clock{now: t0}}
	lim := scache.Limits{MaxEntries: 10, MaxBytes: scache.Size("id", make([]byte, 100))}
	c := scache.New(scache.Config{Name: "smtp", Database: "memory:", Timeout: time.Hour, Now: f.clk.Now}, memstore.New(lim))
	defer c.Close()
	if err := c.Update(bg, "id", make([]byte, 100)); err != nil {
		t.Fatalf("Update at the bound: %v", err)
	}
	err := c.Update(bg, "id", make([]byte, 101))
	if err != scache.ErrTooLarge {
		t.Fatalf("Update over the bound = %v, want scache.ErrTooLarge itself", err)
	}
	s, _ := c.Stats(bg)
	wantCounters(t, s, 0, 0, 0, 1, 1, 0, 0, 0)
	if got, err := c.Lookup(bg, "id"); err != nil || len(got) != 100 {
		t.Errorf("the old entry should survive a refused update: %d bytes, %v", len(got), err)
	}
}

func TestStoreErrorsWrappedAndCounted(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "x")
	f.store.setFail(errBoom)

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, errBoom) {
			t.Errorf("%s error = %v, want it to wrap the store's error", op, err)
		}
		if errors.Is(err, scache.ErrNotFound) {
			t.Errorf("%s error %v matches ErrNotFound", op, err)
		}
		want := "smtpd TLS cache btree:/tmp/smtpd_scache: " + op + ": "
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s error = %q, want prefix %q", op, err, want)
		}
	}
	_, err := f.c.Lookup(bg, "a")
	check("lookup", err)
	check("update", f.c.Update(bg, "a", []byte("y")))
	found, err := f.c.Delete(bg, "a")
	if found {
		t.Error("Delete reported found on a store error")
	}
	check("delete", err)
	n, err := f.c.Sweep(bg)
	if n != 0 {
		t.Errorf("Sweep removed %d on a store error", n)
	}
	check("sweep", err)
	wantCounters(t, f.stats(t), 0, 0, 0, 1, 0, 0, 0, 4)
}

// An expired entry whose delete fails is still a miss; the failure counts.
func TestExpiredDeleteFailureCounted(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "x")
	f.store.failDelete = true
	f.clk.Advance(2 * time.Hour)
	if _, err := f.c.Lookup(bg, "a"); err != scache.ErrNotFound {
		t.Fatalf("Lookup = %v, want ErrNotFound", err)
	}
	wantCounters(t, f.stats(t), 0, 1, 1, 1, 0, 0, 0, 1)
}

func TestSweepBatches(t *testing.T) {
	var mu sync.Mutex
	var mixed []string
	f := newCache(t, func(c *scache.Config) {
		c.SweepBatch = 10
		c.Mix = func(b []byte) {
			mu.Lock()
			mixed = append(mixed, string(b))
			mu.Unlock()
		}
	})
	var want []string
	for i := range 25 {
		s := fmt.Sprintf("old-%02d", i)
		f.update(t, s, "sess-"+s)
		want = append(want, "sess-"+s)
		f.clk.Advance(time.Second)
	}
	// These five are written 40 minutes later: at sweep time they are
	// 30 minutes old, the others 70.
	f.clk.Advance(40 * time.Minute)
	for i := range 5 {
		f.update(t, fmt.Sprintf("new-%d", i), "fresh")
	}
	f.clk.Advance(30 * time.Minute)

	n, err := f.c.Sweep(bg)
	if err != nil || n != 25 {
		t.Fatalf("Sweep = %d, %v; want 25, nil", n, err)
	}
	if calls := f.store.expireCalls(); !slices.Equal(calls, []int{10, 10, 10}) {
		t.Errorf("Expire calls with max = %v, want three batches of 10", calls)
	}
	mu.Lock()
	slices.Sort(mixed)
	if !slices.Equal(mixed, want) {
		t.Errorf("Mix received %q, want the 25 expired sessions", mixed)
	}
	mu.Unlock()
	s := f.stats(t)
	if s.Swept != 25 || s.Store.Entries != 5 {
		t.Errorf("after Sweep: swept %d, entries %d; want 25, 5", s.Swept, s.Store.Entries)
	}
	for i := range 5 {
		if _, err := f.c.Lookup(bg, fmt.Sprintf("new-%d", i)); err != nil {
			t.Errorf("fresh entry new-%d: %v", i, err)
		}
	}

	// Nothing left to expire: one call, nothing removed.
	if n, err := f.c.Sweep(bg); n != 0 || err != nil {
		t.Errorf("second Sweep = %d, %v", n, err)
	}
	if calls := f.store.expireCalls(); len(calls) != 4 {
		t.Errorf("second Sweep made %d Expire calls, want 1", len(calls)-3)
	}
}

// The default batch is 100.
func TestSweepDefaultBatch(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "x")
	f.clk.Advance(2 * time.Hour)
	if n, err := f.c.Sweep(bg); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if calls := f.store.expireCalls(); !slices.Equal(calls, []int{100}) {
		t.Errorf("Expire calls = %v, want [100]", calls)
	}
}

// endlessStore always claims that more expired entries remain.
type endlessStore struct {
	scache.Store
	calls  int
	onCall func(n int)
}

func (s *endlessStore) Expire(ctx context.Context, cutoff time.Time, max int, visit func([]byte)) (int, bool, error) {
	s.calls++
	s.onCall(s.calls)
	return 1, true, nil
}

func TestSweepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	st := &endlessStore{Store: memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20})}
	st.onCall = func(n int) {
		if n == 3 {
			cancel()
		}
	}
	c := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour, SweepBatch: 1}, st)
	defer c.Close()
	done := make(chan struct{})
	var n int
	var err error
	go func() { n, err = c.Sweep(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Sweep did not stop after its context was cancelled")
	}
	if !errors.Is(err, context.Canceled) || n != 3 || st.calls != 3 {
		t.Errorf("Sweep = %d, %v after %d calls; want 3, context.Canceled after 3", n, err, st.calls)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestRunSweeper(t *testing.T) {
	// The ticker runs on real time (Timeout 50ms); the entries' ages are
	// on the injected clock, so what expires is decided by the test.
	f := newCache(t, func(c *scache.Config) { c.Timeout = 50 * time.Millisecond })
	for i := range 7 {
		f.update(t, fmt.Sprint("e", i), "x")
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { f.c.RunSweeper(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
	}()

	// Wait for a few ticks: nothing has expired yet, so nothing goes.
	waitFor(t, "the sweeper's first ticks", func() bool { return len(f.store.expireCalls()) >= 2 })
	if s := f.stats(t); s.Swept != 0 || s.Store.Entries != 7 {
		t.Fatalf("sweeper removed live entries: %+v", s)
	}

	f.clk.Advance(time.Second)
	waitFor(t, "the sweeper to remove the expired entries", func() bool { return f.stats(t).Swept == 7 })
	if s := f.stats(t); s.Store.Entries != 0 {
		t.Errorf("entries left after sweeping: %d", s.Store.Entries)
	}

	// A failing sweep is logged as a warning.
	f.store.setFail(errBoom)
	waitFor(t, "a warning about the failing sweep", func() bool {
		for _, l := range f.log.Lines() {
			if l.Level == "warn" && strings.Contains(l.Text, "sweep") && strings.Contains(l.Text, errBoom.Error()) {
				return true
			}
		}
		return false
	})

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunSweeper did not return after cancel")
	}
}

func TestLogCacheWording(t *testing.T) {
	const id = "0123ABCD&s=smtpd&l=805306672"
	secret := "TOP-SECRET-SESSION-BYTES"
	f := newCache(t, func(c *scache.Config) { c.LogCache = true })
	f.update(t, id, secret)
	f.clk.Advance(time.Minute)
	if _, err := f.c.Lookup(bg, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Lookup(bg, "missing"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := f.c.Delete(bg, id); err != nil {
		t.Fatal(err)
	}
	f.update(t, "old", secret)
	f.clk.Advance(2 * time.Hour)
	if _, err := f.c.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	f.c.Close()

	want := []string{
		"open smtpd TLS cache btree:/tmp/smtpd_scache",
		"put smtpd session id=" + id + " [data 24 bytes]",
		"write smtpd TLS cache entry " + id + ": time=1700000000 [data 24 bytes]",
		"lookup smtpd session id=" + id,
		"read smtpd TLS cache entry " + id + ": time=1700000000 [data 24 bytes]",
		"lookup smtpd session id=missing",
		"delete smtpd session id=" + id,
		"put smtpd session id=old [data 24 bytes]",
		"write smtpd TLS cache entry old: time=1700000060 [data 24 bytes]",
		"start TLS smtpd session cache cleanup",
		"close smtpd TLS cache btree:/tmp/smtpd_scache",
	}
	got := f.log.Lines()
	if !slices.Equal(got, infos(want)) {
		t.Errorf("log:\n%s\nwant:\n%s", f.log.String(), strings.Join(want, "\n"))
	}
	forms := []string{secret, hex.EncodeToString([]byte(secret)), base64.StdEncoding.EncodeToString([]byte(secret)), "TOP-SECRET"}
	for _, l := range got {
		for _, s := range forms {
			if strings.Contains(strings.ToLower(l.Text), strings.ToLower(s)) {
				t.Errorf("log line %q contains session bytes", l.Text)
			}
		}
	}
}

func TestNoLoggingWithoutLogCache(t *testing.T) {
	f := newCache(t, nil)
	f.update(t, "a", "x")
	f.c.Lookup(bg, "a")
	f.c.Lookup(bg, "b")
	f.c.Delete(bg, "a")
	f.c.Sweep(bg)
	f.c.Close()
	if got := f.log.Lines(); len(got) != 0 {
		t.Errorf("LogCache off, but logged %q", got)
	}
}

// LogCache without a logger must not crash: New already tolerates it.
func TestLogCacheWithoutLogger(t *testing.T) {
	clk := &clock{now: t0}
	c := scache.New(scache.Config{Name: "smtp", Timeout: time.Hour, LogCache: true, Now: clk.Now},
		memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}))
	if err := c.Update(bg, "a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNameTimeout(t *testing.T) {
	f := newCache(t, func(c *scache.Config) { c.Name, c.Timeout = "lmtp", 7*time.Minute })
	if f.c.Name() != "lmtp" || f.c.Timeout() != 7*time.Minute {
		t.Errorf("Name, Timeout = %q, %v", f.c.Name(), f.c.Timeout())
	}
}

// expiryRecorder records the lifetimes Put is given, which a store whose
// entries expire by themselves (Redis) gives them.
type expiryRecorder struct {
	scache.Store
	mu      sync.Mutex
	expires []time.Time
}

func (s *expiryRecorder) Put(ctx context.Context, id string, e scache.Entry) error {
	s.mu.Lock()
	s.expires = append(s.expires, e.Expires)
	s.mu.Unlock()
	return s.Store.Put(ctx, id, e)
}

// A store learns each entry's expiry at Put, but the cache still decides
// expiry from the write time.
func TestPutGetsExpiry(t *testing.T) {
	st := &expiryRecorder{Store: memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20})}
	clk := &clock{now: t0}
	c := scache.New(scache.Config{Name: "smtp", Database: "redis:x", Timeout: time.Hour, Now: clk.Now}, st)
	defer c.Close()
	if err := c.Update(bg, "id", []byte("s")); err != nil {
		t.Fatal(err)
	}
	if len(st.expires) != 1 || !st.expires[0].Equal(t0.Add(time.Hour)) {
		t.Fatalf("Put was given expiries %v, want [%v]", st.expires, t0.Add(time.Hour))
	}
	// Expiry is still the cache's: written + timeout, as in Postfix.
	clk.now = t0.Add(time.Hour + time.Second)
	if _, err := c.Lookup(bg, "id"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("expired entry returned: %v", err)
	}
}

package tktkey

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// memStore is an EpochStore in memory shared by a test fleet. Entries
// expire at their until by the fleet's base clock, as Redis expires keys.
type memStore struct {
	mu     sync.Mutex
	now    func() time.Time
	epochs map[int64]storedKey
}

type storedKey struct {
	k     proto.TicketKey
	until time.Time
}

func newMemStore(now func() time.Time) *memStore {
	return &memStore{now: now, epochs: make(map[int64]storedKey)}
}

func (s *memStore) live(e int64) (proto.TicketKey, bool) {
	sk, ok := s.epochs[e]
	if ok && !s.now().Before(sk.until) {
		delete(s.epochs, e)
		return proto.TicketKey{}, false
	}
	return sk.k, ok
}

func (s *memStore) Epochs(ctx context.Context, epochs []int64) (map[int64]proto.TicketKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]proto.TicketKey)
	for _, e := range epochs {
		if k, ok := s.live(e); ok {
			out[e] = k
		}
	}
	return out, nil
}

func (s *memStore) Create(ctx context.Context, e int64, k proto.TicketKey, until time.Time) (proto.TicketKey, error) {
	if err := ctx.Err(); err != nil {
		return proto.TicketKey{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.live(e); ok {
		return old, nil
	}
	s.epochs[e] = storedKey{k, until}
	return k, nil
}

func (s *memStore) ByName(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	if err := ctx.Err(); err != nil {
		return proto.TicketKey{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for e := range s.epochs {
		if k, ok := s.live(e); ok && k.Name == name {
			return k, nil
		}
	}
	return proto.TicketKey{}, ErrUnknownKey
}

// put replaces an epoch's key behind the members' backs (a failover that
// lost a write, then another member's create).
func (s *memStore) put(e int64, k proto.TicketKey, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epochs[e] = storedKey{k, until}
}

func (s *memStore) forget(e int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.epochs, e)
}

func (s *memStore) get(e int64) (proto.TicketKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live(e)
}

type storeMode int

const (
	modeUp    storeMode = iota
	modeDown            // every call fails at once
	modeHang            // every call waits for its context
	modeStuck           // every call waits for unstick, ignoring its context
)

var errStoreDown = errors.New("store down")

// faultStore is one member's view of the shared store.
type faultStore struct {
	inner   EpochStore
	mu      sync.Mutex
	mode    storeMode
	release chan struct{}
	calls   map[string]int
	events  chan string // each call's method, dropped when full
	during  func(method string)
}

func (f *faultStore) set(m storeMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = m
	if m == modeStuck && f.release == nil {
		f.release = make(chan struct{})
	}
}

func (f *faultStore) unstick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.release != nil {
		close(f.release)
		f.release = nil
	}
	f.mode = modeUp
}

// drain drops the events of calls made so far.
func (f *faultStore) drain() {
	for {
		select {
		case <-f.events:
		default:
			return
		}
	}
}

func (f *faultStore) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *faultStore) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls[method]++
	mode, rel, during := f.mode, f.release, f.during
	f.mu.Unlock()
	if during != nil {
		during(method)
	}
	select {
	case f.events <- method:
	default:
	}
	switch mode {
	case modeDown:
		return errStoreDown
	case modeHang:
		<-ctx.Done()
		return ctx.Err()
	case modeStuck:
		<-rel
		return errStoreDown
	}
	return nil
}

func (f *faultStore) Epochs(ctx context.Context, epochs []int64) (map[int64]proto.TicketKey, error) {
	if err := f.enter(ctx, "Epochs"); err != nil {
		return nil, err
	}
	return f.inner.Epochs(ctx, epochs)
}

func (f *faultStore) Create(ctx context.Context, e int64, k proto.TicketKey, until time.Time) (proto.TicketKey, error) {
	if err := f.enter(ctx, "Create"); err != nil {
		return proto.TicketKey{}, err
	}
	return f.inner.Create(ctx, e, k, until)
}

func (f *faultStore) ByName(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	if err := f.enter(ctx, "ByName"); err != nil {
		return proto.TicketKey{}, err
	}
	return f.inner.ByName(ctx, name)
}

// simClock is the fleet's base clock. Members see it with a skew; their
// timers fire only when the test advances past them, one at a time, each
// time waiting until the member's Run has armed its next timer.
type simClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []*simTimer
	armed  []*simTimer // every timer ever armed, in order
	dead   bool
}

type simTimer struct {
	who string
	at  time.Time
	d   time.Duration
	ch  chan time.Time
}

func newSimClock(start time.Time) *simClock {
	c := &simClock{now: start}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *simClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *simClock) nowFunc(skew time.Duration) func() time.Time {
	return func() time.Time { return c.Now().Add(skew) }
}

func (c *simClock) afterFunc(who string) func(time.Duration) <-chan time.Time {
	return func(d time.Duration) <-chan time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		tm := &simTimer{who: who, at: c.now.Add(d), d: d, ch: make(chan time.Time, 1)}
		c.timers = append(c.timers, tm)
		c.armed = append(c.armed, tm)
		c.cond.Broadcast()
		return tm.ch
	}
}

func (c *simClock) armedCount() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.armed) }

func (c *simClock) last(who string) *simTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.armed) - 1; i >= 0; i-- {
		if c.armed[i].who == who {
			return c.armed[i]
		}
	}
	return nil
}

func (c *simClock) waitArmed(t *testing.T, n int) {
	t.Helper()
	watchdog := time.AfterFunc(10*time.Second, func() {
		c.mu.Lock()
		c.dead = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer watchdog.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.armed) < n && !c.dead {
		c.cond.Wait()
	}
	if len(c.armed) < n {
		t.Fatalf("Run did not arm its next timer (%d armed, want %d)", len(c.armed), n)
	}
}

// advanceTo moves the clock to target, firing the timers due on the way
// in order.
func (c *simClock) advanceTo(t *testing.T, target time.Time) {
	t.Helper()
	for {
		c.mu.Lock()
		idx := -1
		for i, tm := range c.timers {
			if !tm.at.After(target) && (idx < 0 || tm.at.Before(c.timers[idx].at)) {
				idx = i
			}
		}
		if idx < 0 {
			if target.After(c.now) {
				c.now = target
			}
			c.mu.Unlock()
			return
		}
		tm := c.timers[idx]
		c.timers = slices.Delete(c.timers, idx, idx+1)
		if tm.at.After(c.now) {
			c.now = tm.at
		}
		n := len(c.armed)
		tm.ch <- c.now
		c.mu.Unlock()
		c.waitArmed(t, n+1)
	}
}

func (c *simClock) advance(t *testing.T, d time.Duration) {
	t.Helper()
	c.advanceTo(t, c.Now().Add(d))
}

// lockedRand is a seeded generator: members get distinct, reproducible
// keys and jitters.
type lockedRand struct {
	mu sync.Mutex
	r  *mathrand.ChaCha8
}

func newSeededRand(n uint64) *lockedRand {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], n)
	return &lockedRand{r: mathrand.NewChaCha8(seed)}
}

func (l *lockedRand) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

type testFleet struct {
	t       *testing.T
	clk     *simClock
	store   *memStore
	timeout time.Duration
	half    int64
	seed    uint64
}

func newTestFleet(t *testing.T, timeout time.Duration) *testFleet {
	clk := newSimClock(time.Unix(t0, 0))
	return &testFleet{t: t, clk: clk, store: newMemStore(clk.Now), timeout: timeout, half: int64(timeout/time.Second) / 2}
}

func (f *testFleet) epochAt(sec int64) int64    { return floorDiv(sec+1, f.half) }
func (f *testFleet) expiryOf(e int64) int64     { return (e+1)*f.half - 1 }
func (f *testFleet) encStart(e int64) time.Time { return time.Unix(e*f.half-1, 0) }
func (f *testFleet) baseEpoch() int64           { return f.epochAt(f.clk.Now().Unix()) }
func (f *testFleet) until(e int64) time.Time    { return time.Unix(f.expiryOf(e)+f.half, 0) }
func (f *testFleet) newStore() *faultStore {
	return &faultStore{inner: f.store, calls: map[string]int{}, events: make(chan string, 64)}
}
func (f *testFleet) join(name string) *member   { return f.joinWith(name, f.newStore(), 0, false, nil) }
func (f *testFleet) runner(name string) *member { return f.joinWith(name, f.newStore(), 0, true, nil) }
func (f *testFleet) skewed(name string, skew time.Duration) *member {
	return f.joinWith(name, f.newStore(), skew, true, nil)
}

type member struct {
	name string
	m    *Manager
	st   *faultStore
	log  *testlog.Recorder
	now  func() time.Time
	stop func()
	ran  chan struct{} // closed when Run returns
}

func (f *testFleet) joinWith(name string, st *faultStore, skew time.Duration, run bool, mod func(*Options)) *member {
	t := f.t
	t.Helper()
	f.seed++
	mb := &member{name: name, st: st, log: &testlog.Recorder{}, now: f.clk.nowFunc(skew)}
	o := Options{
		Timeout: f.timeout, Rand: newSeededRand(f.seed), Log: mb.log.Logger(), Now: mb.now,
		Fleet: st, After: f.clk.afterFunc(name), StoreTimeout: time.Minute, LookupTimeout: time.Minute,
	}
	if mod != nil {
		mod(&o)
	}
	m, err := NewManager(bg, o)
	if err != nil {
		t.Fatalf("NewManager(%s): %v", name, err)
	}
	mb.m = m
	t.Cleanup(m.Close)
	if run {
		ctx, cancel := context.WithCancel(bg)
		mb.ran = make(chan struct{})
		n := f.clk.armedCount()
		go func() { defer close(mb.ran); m.Run(ctx) }()
		f.clk.waitArmed(t, n+1)
		var once sync.Once
		mb.stop = func() {
			once.Do(func() {
				cancel()
				select {
				case <-mb.ran:
				case <-time.After(10 * time.Second):
					t.Errorf("%s: Run did not return after its context ended", name)
				}
			})
		}
		t.Cleanup(mb.stop)
	}
	return mb
}

func (mb *member) epoch() int64 { return mb.m.fleet().epochAt(mb.now().Unix()) }

// fleet is the ring of a manager made with a Fleet.
func (m *Manager) fleet() *fleetRing { return m.ring.(*fleetRing) }

func (mb *member) enc(t *testing.T) proto.TicketKey {
	t.Helper()
	k, err := mb.m.Encrypting(bg)
	if err != nil {
		t.Fatalf("%s: Encrypting: %v", mb.name, err)
	}
	return k
}

func (mb *member) dec(t *testing.T, name [proto.TicketNameLen]byte) (proto.TicketKey, bool) {
	t.Helper()
	k, err := mb.m.Decrypting(bg, name)
	switch {
	case err == nil:
		if k.Name != name {
			t.Fatalf("%s: Decrypting returned key %x for name %x", mb.name, k.Name, name)
		}
		return k, true
	case errors.Is(err, ErrUnknownKey):
		return proto.TicketKey{}, false
	}
	t.Fatalf("%s: Decrypting: %v", mb.name, err)
	return proto.TicketKey{}, false
}

// fleetKeys is the member's view of the fleet's key per epoch.
func (mb *member) fleetKeys() map[int64]KeyInfo {
	out := make(map[int64]KeyInfo)
	for _, k := range mb.m.Keys() {
		if !k.Local && !k.Spare {
			out[k.Epoch] = k
		}
	}
	return out
}

func (mb *member) entryOf(name [proto.TicketNameLen]byte) *proto.TicketKey {
	r := mb.m.fleet()
	r.mu.Lock()
	defer r.mu.Unlock()
	if en := r.byName(name); en != nil {
		return en.key
	}
	return nil
}

func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return: blocked behind the store", what)
	}
}

func waitEvent(t *testing.T, ch chan string, method string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if m == method {
				return
			}
		case <-timeout:
			t.Fatalf("no %s call reached the store", method)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		runtime.Gosched()
	}
}

// (1) Three members agree on every epoch's key and on the digest, and
// one member's ticket key is answered by name by the others from their
// rings, without asking the store.
func TestFleetMembersAgree(t *testing.T) {
	f := newTestFleet(t, 120*time.Second) // H = 60
	a, b, c := f.join("a"), f.join("b"), f.join("c")
	e := f.baseEpoch()

	ka := a.enc(t)
	if ka.Expiry != f.expiryOf(e) || ka.Expiry <= t0 || ka.Expiry-t0 > f.half {
		t.Fatalf("key expires at t0%+d, want (e+1)*H-1 = t0%+d", ka.Expiry-t0, f.expiryOf(e)-t0)
	}
	for _, mb := range []*member{b, c} {
		if k := mb.enc(t); k != ka {
			t.Errorf("%s encrypts with another key than a in the same epoch", mb.name)
		}
		if k, ok := mb.dec(t, ka.Name); !ok || k != ka {
			t.Errorf("%s cannot decrypt a's ticket key", mb.name)
		}
	}
	if k, ok := a.dec(t, b.enc(t).Name); !ok || k != ka {
		t.Error("a cannot decrypt b's ticket key")
	}
	want := a.fleetKeys()
	if len(want) != 2 || want[e].Name != ka.Name || want[e+1].Expiry != f.expiryOf(e+1) {
		t.Fatalf("a's ring = %+v, want epochs %d (current) and %d (next)", want, e, e+1)
	}
	stored, _ := f.store.get(e + 1)
	if want[e+1].Name != stored.Name {
		t.Error("the next key held is not the stored one")
	}
	for _, mb := range []*member{b, c} {
		if got := mb.fleetKeys(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s's ring %+v differs from a's %+v", mb.name, got, want)
		}
		if mb.m.Digest() != a.m.Digest() {
			t.Errorf("%s's digest %s differs from a's %s", mb.name, mb.m.Digest(), a.m.Digest())
		}
		if n := mb.st.count("Create"); n != 0 {
			t.Errorf("%s made %d creates though the keys were stored", mb.name, n)
		}
	}
	if a.m.Digest() == "" {
		t.Error("empty digest with fleet keys held")
	}
	for _, mb := range []*member{a, b, c} {
		if n := mb.st.count("ByName"); n != 0 {
			t.Errorf("%s asked the store by name %d times for keys in its ring", mb.name, n)
		}
		if s := mb.m.Stats(); s.Mode != "fleet" || !s.FleetUp || s.LocalKeys != 0 || s.Keys != 2 || s.Digest != a.m.Digest() {
			t.Errorf("%s stats = %+v", mb.name, s)
		}
	}
}

// (2) With clocks skewed by -5s, 0 and +5s and each member's own Run
// schedule, across six epoch boundaries: one key per epoch for the whole
// fleet, every key any member encrypts with is in every other member's
// ring at that moment, and each member holds the next key at least H/2
// before its epoch.
func TestFleetSkewedClocksAcrossBoundaries(t *testing.T) {
	f := newTestFleet(t, 120*time.Second) // H = 60, refreshes at 15s and 45s (+ up to 3.75s)
	ms := []*member{f.skewed("slow", -5*time.Second), f.skewed("exact", 0), f.skewed("fast", 5*time.Second)}
	first := f.baseEpoch()
	issued := make(map[int64][proto.TicketNameLen]byte)
	end := f.clk.Now().Add(6*time.Minute + 30*time.Second)
	for f.clk.Now().Before(end) {
		f.clk.advance(t, time.Second)
		for _, x := range ms {
			k := x.enc(t)
			e := x.epoch()
			if k.Expiry != f.expiryOf(e) {
				t.Fatalf("%s at t0%+d: key of epoch %d expires at %d", x.name, x.now().Unix()-t0, e, k.Expiry)
			}
			if prev, ok := issued[e]; ok && prev != k.Name {
				t.Fatalf("two keys encrypt in epoch %d", e)
			}
			issued[e] = k.Name
			for _, y := range ms {
				if y == x {
					continue
				}
				if got, ok := y.dec(t, k.Name); !ok || got != k {
					t.Fatalf("at base t0%+d %s encrypts with a key %s cannot decrypt", f.clk.Now().Unix()-t0, x.name, y.name)
				}
			}
			held := x.fleetKeys()
			sec := x.now().Unix()
			if off := sec + 1 - e*f.half; off >= f.half/2 {
				if _, ok := held[e+1]; !ok {
					t.Fatalf("%s, %ds into epoch %d, has not loaded the next key", x.name, off, e)
				}
			}
			for _, d := range []int64{-10, 10} {
				if oe := f.epochAt(sec + d); oe >= first {
					if _, ok := held[oe]; !ok {
						t.Fatalf("%s at t0%+d lacks the key of epoch %d, in use %+ds away", x.name, sec-t0, oe, d)
					}
				}
			}
		}
	}
	if len(issued) < 6 {
		t.Fatalf("only %d epochs simulated", len(issued))
	}
	for _, x := range ms {
		if n := x.st.count("ByName"); n != 0 {
			t.Errorf("%s needed %d by-name lookups: a key was not loaded ahead", x.name, n)
		}
		if s := x.m.Stats(); s.LocalKeys != 0 || s.RefreshFailures != 0 || s.Refreshes < 12 {
			t.Errorf("%s stats = %+v", x.name, s)
		}
		if x.log.Count("warn", "") != 0 {
			t.Errorf("%s warned: %s", x.name, x.log.String())
		}
	}
	// Halfway into an epoch every member holds previous, current, next.
	f.clk.advanceTo(t, f.encStart(f.baseEpoch()+1).Add(30*time.Second))
	for _, x := range ms[1:] {
		if x.m.Digest() != ms[0].m.Digest() || len(x.fleetKeys()) != 3 {
			t.Errorf("%s: digest %s, %d fleet keys; slow: %s", x.name, x.m.Digest(), len(x.fleetKeys()), ms[0].m.Digest())
		}
	}
}

// (3) A member started later loads the previous epoch's key too: same
// ring, same digest, and it decrypts tickets issued before it started.
func TestFleetLateMemberAdopts(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a, b := f.join("a"), f.join("b")
	var old []proto.TicketKey
	for range 3 {
		old = append(old, a.enc(t))
		f.clk.advanceTo(t, f.encStart(f.baseEpoch()+1).Add(20*time.Second))
		for _, mb := range []*member{a, b} {
			if err := mb.m.Refresh(bg); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := f.join("c")
	if c.m.Digest() != a.m.Digest() || c.m.Digest() != b.m.Digest() || len(c.fleetKeys()) != 3 {
		t.Fatalf("late member: digest %s, ring %+v; a: %s %+v", c.m.Digest(), c.fleetKeys(), a.m.Digest(), a.fleetKeys())
	}
	prev := old[len(old)-1] // issued in what is now the previous epoch
	if k, ok := c.dec(t, prev.Name); !ok || k != prev {
		t.Error("the late member cannot decrypt a ticket of the previous epoch")
	}
	if k := c.enc(t); k != a.enc(t) {
		t.Error("the late member encrypts with another key")
	}
	if n := c.st.count("ByName") + c.st.count("Create"); n != 0 {
		t.Errorf("the late member made %d by-name lookups or creates", n)
	}
}

// (4) The store goes away after the next key was loaded: the next epoch
// is served with the fleet's key, no local key, one warning.
func TestFleetOutageAfterNextKeyLoaded(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a, b := f.join("a"), f.join("b")
	e := f.baseEpoch()
	prev := a.enc(t)
	next := a.fleetKeys()[e+1]
	a.st.set(modeDown)
	b.st.set(modeDown)
	for range 3 {
		if err := a.m.Refresh(bg); !errors.Is(err, errStoreDown) {
			t.Fatalf("Refresh with the store down = %v", err)
		}
	}
	f.clk.advanceTo(t, f.encStart(e+1))
	ka, kb := a.enc(t), b.enc(t)
	if ka.Name != next.Name || ka != kb {
		t.Fatalf("at the boundary a encrypts with %x, b with %x; the fleet's next key is %x", ka.Name, kb.Name, next.Name)
	}
	if k, ok := b.dec(t, ka.Name); !ok || k != ka {
		t.Error("b cannot decrypt a's ticket during the outage")
	}
	if k, ok := b.dec(t, prev.Name); !ok || k != prev {
		t.Error("the previous epoch's key no longer decrypts during the outage")
	}
	for _, mb := range []*member{a, b} {
		if s := mb.m.Stats(); s.LocalKeys != 0 {
			t.Errorf("%s made %d local keys", mb.name, s.LocalKeys)
		}
		if mb.log.Count("", "local key") != 0 {
			t.Errorf("%s: %s", mb.name, mb.log.String())
		}
	}
	if n := a.log.Count("", "cannot refresh the fleet ring"); n != 1 {
		t.Errorf("three failed refreshes logged %d times, want once:\n%s", n, a.log.String())
	}
	if s := a.m.Stats(); s.FleetUp || s.RefreshFailures != 3 || s.StoreErrors != 3 {
		t.Errorf("stats = %+v", s)
	}
}

// (5) An outage that outlasts the next key: a local key, logged once;
// when the store is back the fleet's key is adopted and the local one
// still decrypts here until it expires, then is wiped.
func TestFleetOutageOutlastingNextKey(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a, b := f.join("a"), f.join("b")
	e := f.baseEpoch()
	a.st.set(modeDown) // a alone loses the store; b keeps the fleet going
	f.clk.advanceTo(t, f.encStart(e+1).Add(15*time.Second))
	if err := b.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if err := a.m.Refresh(bg); err == nil {
		t.Fatal("a refreshed without a store")
	}
	f.clk.advanceTo(t, f.encStart(e+2))
	fleetKey := b.enc(t)
	local := a.enc(t)
	if local.Name == fleetKey.Name || local.Expiry != fleetKey.Expiry || local.Expiry != f.expiryOf(e+2) {
		t.Fatalf("local key %x expiring %d; fleet key %x expiring %d", local.Name, local.Expiry, fleetKey.Name, fleetKey.Expiry)
	}
	for range 100 {
		if k := a.enc(t); k != local {
			t.Fatal("a second local key in one epoch")
		}
	}
	if n := a.log.Count("", "no fleet key for epoch"); n != 1 || a.m.Stats().LocalKeys != 1 {
		t.Errorf("local fallback logged %d times, %d local keys; want 1, 1:\n%s", n, a.m.Stats().LocalKeys, a.log.String())
	}
	if !strings.Contains(a.log.String(), fmt.Sprintf("no fleet key for epoch %d (store unavailable); using a local key", e+2)) {
		t.Errorf("log: %s", a.log.String())
	}
	if _, ok := b.dec(t, local.Name); ok {
		t.Fatal("b decrypts a's local key")
	}
	if strings.Contains(a.log.String(), fmt.Sprintf("%x", local.AES)) || strings.Contains(a.log.String(), fmt.Sprintf("%x", local.Name)) {
		t.Fatal("key material in the log")
	}

	a.st.set(modeUp)
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if k := a.enc(t); k != fleetKey {
		t.Error("a does not encrypt with the fleet's key after the store came back")
	}
	if k, ok := a.dec(t, local.Name); !ok || k != local {
		t.Error("the local key no longer decrypts where it was issued")
	}
	if err := b.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if a.m.Digest() != b.m.Digest() {
		t.Errorf("digests differ after the rejoin: %s %s", a.m.Digest(), b.m.Digest())
	}
	var sawLocal bool
	for _, k := range a.m.Keys() {
		if k.Name == local.Name {
			sawLocal = k.Local && k.Epoch == e+2
		}
	}
	if !sawLocal {
		t.Errorf("Keys does not list the local key as local: %+v", a.m.Keys())
	}
	if a.log.Count("", "fleet key of epoch") != 1 || a.log.Count("info", "session ticket keys: fleet ring refreshed again") != 1 {
		t.Errorf("log: %s", a.log.String())
	}

	ptr := a.entryOf(local.Name)
	f.clk.advanceTo(t, time.Unix(local.Expiry+f.half-1, 0))
	if _, ok := a.dec(t, local.Name); !ok {
		t.Fatal("the local key expired early")
	}
	f.clk.advanceTo(t, time.Unix(local.Expiry+f.half, 0))
	lookups := a.st.count("ByName")
	if _, ok := a.dec(t, local.Name); ok {
		t.Fatal("the local key decrypts past Expiry + T/2")
	}
	if *ptr != (proto.TicketKey{}) {
		t.Error("the expired local key was not wiped")
	}
	if a.st.count("ByName") != lookups {
		t.Error("a retired key's name went to the store")
	}
}

// (5b) A local key made during an outage is offered to the store when
// it returns; if no other member made one meanwhile, it becomes the
// fleet's, and tickets issued with it decrypt everywhere.
func TestFleetLocalKeyBecomesFleetKey(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	st := f.newStore()
	st.set(modeDown)
	a := f.joinWith("a", st, 0, false, nil) // starts with the store away
	if a.log.Count("", "cannot refresh the fleet ring") != 1 {
		t.Fatalf("start-up refresh failure not logged: %s", a.log.String())
	}
	local := a.enc(t)
	st.set(modeUp)
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if k := a.enc(t); k != local {
		t.Error("a switched keys although its own became the fleet's")
	}
	if stored, ok := f.store.get(f.baseEpoch()); !ok || stored != local {
		t.Fatal("the local key was not offered to the store")
	}
	for _, k := range a.m.Keys() {
		if k.Name == local.Name && (k.Local || k.Spare) {
			t.Errorf("still listed as local: %+v", k)
		}
	}
	if a.log.Count("", "is now the fleet's") != 1 {
		t.Errorf("log: %s", a.log.String())
	}
	b := f.join("b")
	if k, ok := b.dec(t, local.Name); !ok || k != local {
		t.Error("a later member cannot decrypt tickets issued during the outage")
	}
	if b.st.count("ByName") != 0 || a.m.Digest() != b.m.Digest() {
		t.Errorf("b: %d by-name lookups, digest %s vs %s", b.st.count("ByName"), b.m.Digest(), a.m.Digest())
	}
}

// (6) A flood of unknown names: the ring misses are remembered and the
// store lookups rate-limited.
func TestFleetBogusNamesBoundedStoreCalls(t *testing.T) {
	f := newTestFleet(t, time.Hour)
	a := f.join("a")
	r := newSeededRand(1 << 40)
	bogus := func() (n [proto.TicketNameLen]byte) { r.Read(n[:]); return n }

	for range 10000 {
		if _, ok := a.dec(t, bogus()); ok {
			t.Fatal("a random name decrypts")
		}
	}
	calls := a.st.count("ByName")
	if calls == 0 || calls > lookupBurst {
		t.Fatalf("10000 unknown names at one instant: %d store lookups, want 1..%d", calls, lookupBurst)
	}
	if s := a.m.Stats(); s.LookupsShed != uint64(10000-calls) || s.NameLookups != uint64(calls) {
		t.Errorf("stats = %+v", s)
	}

	before := a.st.count("ByName")
	for i := range 10000 {
		if i%100 == 0 {
			f.clk.advance(t, time.Second)
		}
		a.dec(t, bogus())
	}
	got := a.st.count("ByName") - before
	if got > lookupBurst+lookupRate*100 || got < lookupRate*99 {
		t.Errorf("10000 unknown names over 100s: %d store lookups, want about %d/s", got, lookupRate)
	}

	f.clk.advance(t, 10*time.Second)
	name := bogus()
	before = a.st.count("ByName")
	negBefore := a.m.Stats().NegativeHits
	for range 1000 {
		a.dec(t, name)
	}
	if n := a.st.count("ByName") - before; n != 1 {
		t.Errorf("one unknown name 1000 times: %d store lookups, want 1", n)
	}
	if n := a.m.Stats().NegativeHits - negBefore; n != 999 {
		t.Errorf("negative hits = %d, want 999", n)
	}
	f.clk.advance(t, missTTL-time.Second)
	a.dec(t, name)
	if a.st.count("ByName")-before != 1 {
		t.Error("the miss was forgotten early")
	}
	f.clk.advance(t, time.Second)
	a.dec(t, name)
	if a.st.count("ByName")-before != 2 {
		t.Error("the miss was not forgotten after missTTL")
	}
	ring := a.m.fleet()
	ring.mu.Lock()
	n := ring.misses.len()
	ring.mu.Unlock()
	if n > missEntries {
		t.Errorf("miss table holds %d names", n)
	}
}

func TestMissTableBounded(t *testing.T) {
	nameOf := func(i int) (n [proto.TicketNameLen]byte) { binary.BigEndian.PutUint64(n[:], uint64(i)+1); return n }
	now := time.Unix(t0, 0)
	var tb missTable
	x := nameOf(-1)
	tb.add(x, now) // slot 0
	for i := range 10 {
		tb.add(nameOf(i), now)
	}
	tb.add(x, now.Add(time.Second)) // again, in slot 11
	for i := 10; len(tb.names) < missEntries; i++ {
		tb.add(nameOf(i), now)
	}
	tb.add(nameOf(1_000_000), now) // evicts slot 0, the first x
	if !tb.hit(x, now) {
		t.Error("a name added again was forgotten with its old slot")
	}
	if !tb.hit(nameOf(0), now) {
		t.Error("slot 1 evicted before its turn")
	}
	tb.add(nameOf(1_000_001), now) // evicts slot 1
	if tb.hit(nameOf(0), now) {
		t.Error("the oldest name was not evicted")
	}
	for i := range 5000 {
		tb.add(nameOf(2_000_000+i), now)
	}
	if tb.len() != missEntries {
		t.Errorf("table holds %d names, want %d", tb.len(), missEntries)
	}
	if tb.hit(x, now) || !tb.hit(nameOf(2_000_000+4999), now) || tb.hit(nameOf(2_000_000+4999-missEntries), now) {
		t.Error("eviction is not oldest first")
	}
	if !tb.hit(nameOf(2_000_000+4999), now.Add(missTTL-1)) || tb.hit(nameOf(2_000_000+4999), now.Add(missTTL)) {
		t.Error("a miss is not remembered for exactly missTTL")
	}
}

// (7) A store that hangs, honouring deadlines or not: requests never wait
// past their context, the lock is never held across a store call, and a
// stuck store holds at most maxInFlight calls.
func TestFleetHangingStore(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a := f.joinWith("a", f.newStore(), 0, false, func(o *Options) {
		o.StoreTimeout = time.Hour // the refresh below ends by cancellation
		o.LookupTimeout = 20 * time.Millisecond
	})
	k := a.enc(t)
	a.st.set(modeStuck)
	a.st.drain()
	t.Cleanup(a.st.unstick)

	ctx, cancel := context.WithCancel(bg)
	refreshed := make(chan error, 1)
	go func() { refreshed <- a.m.Refresh(ctx) }()
	waitEvent(t, a.st.events, "Epochs")
	within(t, "requests during a refresh", func() {
		if got, err := a.m.Encrypting(bg); err != nil || got != k {
			t.Errorf("Encrypting during a stuck refresh = %v", err)
		}
		if got, err := a.m.Decrypting(bg, k.Name); err != nil || got != k {
			t.Errorf("Decrypting during a stuck refresh = %v", err)
		}
		_, _, _ = a.m.Keys(), a.m.Digest(), a.m.Stats()
	})
	select {
	case err := <-refreshed:
		t.Fatalf("the refresh returned early (%v): the check above proved nothing", err)
	default:
	}
	cancel()
	select {
	case err := <-refreshed:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled refresh = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Refresh waited for a store call past its context")
	}

	// A lookup against the stuck store ends at the request's deadline.
	for _, c := range []struct {
		what    string
		timeout time.Duration // 0: no deadline, LookupTimeout applies
	}{{"request deadline", 30 * time.Millisecond}, {"LookupTimeout", 0}} {
		ctx, cancel := bg, context.CancelFunc(func() {})
		if c.timeout > 0 {
			ctx, cancel = context.WithTimeout(bg, c.timeout)
		}
		start := time.Now()
		_, err := a.m.Decrypting(ctx, [proto.TicketNameLen]byte{0xb0, byte(c.timeout)})
		el := time.Since(start)
		cancel()
		waitEvent(t, a.st.events, "ByName") // it did ask, and gave up
		if !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s: Decrypting = %v, want ErrUnknownKey", c.what, err)
		}
		if el > 30*time.Millisecond+time.Second {
			t.Errorf("%s: Decrypting took %v against a stuck store", c.what, el)
		}
	}
	if s := a.m.Stats(); s.StoreTimeouts != 3 || s.NameLookups != 2 {
		t.Errorf("stats = %+v, want 3 timeouts (refresh, 2 lookups)", s)
	}

	// The three stuck calls hold slots; five more fill them, then
	// unknown names cost no store call at all.
	before := a.st.count("ByName")
	for i := range 10 {
		ctx, cancel := context.WithCancel(bg)
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.m.Decrypting(ctx, [proto.TicketNameLen]byte{0xc0, byte(i)})
		}()
		if i < maxInFlight-3 {
			waitEvent(t, a.st.events, "ByName")
		}
		cancel()
		<-done
	}
	if n := a.st.count("ByName") - before; n != maxInFlight-3 {
		t.Errorf("%d lookups reached a store holding every call slot, want %d", n, maxInFlight-3)
	}
	if s := a.m.Stats(); s.LookupsShed != 5 {
		t.Errorf("shed = %d, want 5", s.LookupsShed)
	}
	a.st.unstick()
	waitFor(t, "stuck calls to return", func() bool { return len(a.m.fleet().slots) == 0 })
	before = a.st.count("ByName")
	a.dec(t, [proto.TicketNameLen]byte{0xd0})
	if a.st.count("ByName") != before+1 {
		t.Error("lookups do not resume once the stuck calls returned")
	}

	// A store that hangs until the deadline: Refresh is bounded by
	// StoreTimeout.
	b := f.joinWith("b", f.newStore(), 0, false, func(o *Options) { o.StoreTimeout = 50 * time.Millisecond })
	b.st.set(modeHang)
	start := time.Now()
	if err := b.m.Refresh(bg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Refresh against a hanging store = %v", err)
	}
	if el := time.Since(start); el > 50*time.Millisecond+time.Second {
		t.Errorf("Refresh took %v with StoreTimeout 50ms", el)
	}
}

// Run's schedule: H/4 and 3H/4 into each epoch plus a jitter below
// min(H/16, 30s); after a failure 1s, 2s, 4s ... 30s; one warning down,
// one note up; Run ends with its context or Close.
func TestFleetRunSchedule(t *testing.T) {
	f := newTestFleet(t, time.Hour) // H = 1800
	a := f.runner("a")
	h := time.Duration(f.half) * time.Second
	span := min(h/16, jitterMax)
	var jitters []time.Duration
	checkPoint := func(from time.Time) *simTimer {
		t.Helper()
		tm := f.clk.last("a")
		e := f.epochAt(from.Unix())
		start := f.encStart(e)
		var p time.Time
		for _, q := range []time.Duration{h / 4, 3 * h / 4, h + h/4} {
			if p = start.Add(q); p.After(from) {
				break
			}
		}
		if j := tm.at.Sub(p); j < 0 || j >= span {
			t.Fatalf("refresh armed for %v after the epoch start, want the next point %v + [0, %v)", tm.at.Sub(start), p.Sub(start), span)
		} else {
			jitters = append(jitters, j)
		}
		return tm
	}
	tm := checkPoint(f.clk.Now())
	for range 4 {
		calls := a.st.count("Epochs")
		f.clk.advanceTo(t, tm.at)
		if a.st.count("Epochs") != calls+1 {
			t.Fatal("the timer fired without a refresh")
		}
		tm = checkPoint(tm.at)
	}
	if slices.Max(jitters) == 0 {
		t.Error("no jitter")
	}

	a.st.set(modeDown)
	f.clk.advanceTo(t, tm.at)
	for _, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		tm = f.clk.last("a")
		if tm.d != want*time.Second {
			t.Fatalf("retry in %v, want %vs", tm.d, want)
		}
		f.clk.advanceTo(t, tm.at)
	}
	a.st.set(modeUp)
	f.clk.advanceTo(t, f.clk.last("a").at)
	checkPoint(f.clk.Now())
	if a.log.Count("warn", "session ticket keys: cannot refresh") != 1 || a.log.Count("info", "session ticket keys: fleet ring refreshed again") != 1 {
		t.Errorf("log:\n%s", a.log.String())
	}
	if s := a.m.Stats(); !s.FleetUp || s.RefreshFailures != 8 || s.Refreshes != 14 || !s.LastRefresh.Equal(f.clk.Now()) {
		t.Errorf("stats = %+v", s)
	}
	a.stop()

	b := f.runner("b")
	b.m.Close()
	select {
	case <-b.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// The wire semantics are Postfix's: a key encrypts while Expiry > now and
// decrypts while Expiry + T/2 > now. So Encrypting moves to the next
// epoch's key in the last second of an epoch, and a key leaves the ring
// (wiped) when it stops decrypting.
func TestFleetExpirySemantics(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a := f.join("a")
	e := f.baseEpoch()
	cur := a.enc(t)
	f.clk.advanceTo(t, time.Unix(f.expiryOf(e)-1, 0))
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if k := a.enc(t); k != cur || k.Expiry <= f.clk.Now().Unix() {
		t.Fatalf("one second before Expiry: %+v", k)
	}
	ptr := a.entryOf(cur.Name)
	f.clk.advanceTo(t, time.Unix(f.expiryOf(e), 0))
	next := a.enc(t)
	if next == cur || next.Expiry != f.expiryOf(e+1) || next.Expiry-f.clk.Now().Unix() != f.half {
		t.Fatalf("at Expiry Encrypting returned %+v (current expires %d)", next, cur.Expiry)
	}
	f.clk.advanceTo(t, time.Unix(cur.Expiry+f.half-1, 0))
	if k, ok := a.dec(t, cur.Name); !ok || k != cur {
		t.Error("previous key lost before Expiry + T/2")
	}
	f.clk.advanceTo(t, time.Unix(cur.Expiry+f.half, 0))
	if _, ok := a.dec(t, cur.Name); ok {
		t.Error("a key decrypts at Expiry + T/2")
	}
	if *ptr != (proto.TicketKey{}) {
		t.Error("the retired key was not wiped")
	}
	if a.m.Stats().LocalKeys != 0 {
		t.Error("local key made although the next key was loaded")
	}
}

// A key found by name is kept (decrypt-only) so the next ticket with it
// costs no store call; the next refresh makes it the epoch's fleet key.
func TestFleetKeyFoundByName(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a, b := f.join("a"), f.join("b")
	e := f.baseEpoch()
	f.clk.advanceTo(t, f.encStart(e+1).Add(15*time.Second))
	a.st.set(modeDown) // a misses the refresh that loads e+2
	if err := a.m.Refresh(bg); err == nil {
		t.Fatal("refresh without a store")
	}
	if err := b.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	a.st.set(modeUp)
	f.clk.advanceTo(t, f.encStart(e+2).Add(-2*time.Second))
	nk, ok := b.m.fleetKeyFor(e + 2)
	if !ok {
		t.Fatal("b has no key for e+2")
	}
	for range 5 {
		if k, ok := a.dec(t, nk.Name); !ok || k != nk {
			t.Fatal("a cannot decrypt by name a key the store holds")
		}
	}
	if n := a.st.count("ByName"); n != 1 {
		t.Errorf("%d by-name lookups for one name, want 1", n)
	}
	if s := a.m.Stats(); s.NameHits != 1 {
		t.Errorf("stats = %+v", s)
	}
	for _, k := range a.m.Keys() {
		if k.Name == nk.Name && (!k.Spare || k.Epoch != e+2) {
			t.Errorf("found by name, listed as %+v", k)
		}
	}
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if n := len(a.m.Keys()); n != 3 {
		t.Errorf("ring after the refresh holds %d keys, want 3: %+v", n, a.m.Keys())
	}
	if a.m.Digest() != b.m.Digest() {
		t.Error("digests differ")
	}
	f.clk.advanceTo(t, f.encStart(e+2))
	if a.enc(t) != nk {
		t.Error("a does not encrypt with the fleet's key")
	}
}

func (m *Manager) fleetKeyFor(e int64) (proto.TicketKey, bool) {
	r := m.fleet()
	r.mu.Lock()
	defer r.mu.Unlock()
	if en := r.find(kindFleet, e); en != nil {
		return *en.key, true
	}
	return proto.TicketKey{}, false
}

// The store loses keys (a restart without persistence, a failover that
// lost writes): members that hold them put them back, so the ring
// survives; a key replaced by another is adopted, the old one kept for
// decryption, and the disagreement logged.
func TestFleetStoreLosesOrReplacesKey(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a, b := f.join("a"), f.join("b")
	e := f.baseEpoch()
	held := a.fleetKeys()
	f.store.forget(e)
	f.store.forget(e + 1)
	for _, mb := range []*member{a, b} {
		if err := mb.m.Refresh(bg); err != nil {
			t.Fatal(err)
		}
	}
	c := f.join("c")
	for _, mb := range []*member{a, b, c} {
		if got := mb.fleetKeys(); fmt.Sprint(got) != fmt.Sprint(held) {
			t.Errorf("%s's ring after the store lost it: %+v, want %+v", mb.name, got, held)
		}
	}

	old, _ := f.store.get(e + 1)
	repl := proto.TicketKey{Name: [proto.TicketNameLen]byte{0xee}, AES: [proto.TicketKeyLen]byte{1}, HMAC: [proto.TicketMACLen]byte{2}, Expiry: f.expiryOf(e + 1)}
	f.store.put(e+1, repl, f.until(e+1))
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	f.clk.advanceTo(t, f.encStart(e+1))
	if k := a.enc(t); k != repl {
		t.Error("the store's replacement key is not adopted")
	}
	if k, ok := a.dec(t, old.Name); !ok || k != old {
		t.Error("the replaced key no longer decrypts here")
	}
	if s := a.m.Stats(); s.Displaced != 1 {
		t.Errorf("displaced = %d", s.Displaced)
	}
	if a.log.Count("", fmt.Sprintf("the store holds another key for epoch %d", e+1)) != 1 {
		t.Errorf("log: %s", a.log.String())
	}
	if err := a.m.Refresh(bg); err != nil || a.log.Count("", "another key") != 1 {
		t.Errorf("a second refresh: %v, log %s", err, a.log.String())
	}
}

// A refresh that takes so long that an epoch passes during it does not
// put back a key that no longer decrypts (seen with a fast clock: keys
// republished with an expiry already past).
func TestFleetSlowRefreshSkipsPassedEpoch(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a := f.join("a")
	e := f.baseEpoch()
	f.store.forget(e) // the store lost the current key, which a holds
	creates := a.st.count("Create")
	a.st.during = func(method string) {
		if method == "Epochs" {
			f.clk.mu.Lock()
			f.clk.now = f.until(e) // key e stops decrypting meanwhile
			f.clk.mu.Unlock()
		}
	}
	if err := a.m.Refresh(bg); err != nil {
		t.Fatal(err)
	}
	if n := a.st.count("Create") - creates; n != 0 {
		t.Errorf("%d creates after the epoch passed, want none", n)
	}
	if _, ok := a.fleetKeys()[e]; ok {
		t.Error("a key that no longer decrypts is still held")
	}
}

// A stored key whose expiry does not fit its epoch (a member with another
// session timeout) is refused, and mail goes on with a local key.
func TestFleetRefusesMisfitKey(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	e := f.baseEpoch()
	bad := proto.TicketKey{Name: [proto.TicketNameLen]byte{0xbb}, AES: [proto.TicketKeyLen]byte{1}, HMAC: [proto.TicketMACLen]byte{2}, Expiry: f.expiryOf(e) + 60}
	f.store.put(e, bad, f.until(e+1))
	a := f.join("a")
	if !strings.Contains(a.log.String(), "do all members use the same session timeout?") {
		t.Errorf("log: %s", a.log.String())
	}
	if _, ok := a.fleetKeys()[e]; ok {
		t.Error("misfit key adopted")
	}
	if _, ok := a.fleetKeys()[e+1]; !ok {
		t.Error("the next key was not made because of the misfit")
	}
	if k := a.enc(t); k.Name == bad.Name || a.m.Stats().LocalKeys != 1 {
		t.Error("no local key in place of the misfit")
	}
}

// Digest covers epoch, name and expiry of the fleet keys, in a fixed
// layout, and nothing secret, local or spare.
func TestFleetDigest(t *testing.T) {
	at := func() time.Time { return time.Unix(600, 0) }
	ring := func() *fleetRing {
		return &fleetRing{ringParams: ringParams{half: 60, now: at}, store: &memStore{}}
	}
	mk := func(aes byte, extra ...*entry) *Manager {
		r := ring()
		for e := int64(10); e <= 12; e++ {
			r.entries = append(r.entries, &entry{
				key:   &proto.TicketKey{Name: [proto.TicketNameLen]byte{byte(e)}, AES: [proto.TicketKeyLen]byte{aes}, Expiry: (e+1)*60 - 1},
				epoch: e,
			})
		}
		r.entries = append(r.entries, extra...)
		return &Manager{half: 60, now: at, ring: r}
	}
	h := sha256.New()
	for e := int64(10); e <= 12; e++ {
		var b [32]byte
		binary.BigEndian.PutUint64(b[:], uint64(e))
		b[8] = byte(e)
		binary.BigEndian.PutUint64(b[24:], uint64((e+1)*60-1))
		h.Write(b[:])
	}
	want := hex.EncodeToString(h.Sum(nil)[:8])
	m1 := mk(1)
	m2 := mk(2, &entry{key: &proto.TicketKey{Name: [proto.TicketNameLen]byte{9}, Expiry: 779}, epoch: 12, kind: kindLocal},
		&entry{key: &proto.TicketKey{Name: [proto.TicketNameLen]byte{8}, Expiry: 719}, epoch: 11, kind: kindSpare})
	r2 := m2.fleet()
	r2.entries[0], r2.entries[2] = r2.entries[2], r2.entries[0]
	if m1.Digest() != want || m2.Digest() != want {
		t.Errorf("digests %s %s, want %s", m1.Digest(), m2.Digest(), want)
	}
	r2.entries[1].key.Name[15] = 1
	if m2.Digest() == want {
		t.Error("digest ignores a name")
	}
	r2.entries[1].key.Name[15] = 0
	r2.entries[1].key.Expiry++
	if m2.Digest() == want {
		t.Error("digest ignores an expiry")
	}
	if len(m2.Keys()) != 5 {
		t.Errorf("Keys = %+v", m2.Keys())
	}
	if (&Manager{half: 60, now: at, ring: ring()}).Digest() != "" {
		t.Error("digest of an empty ring")
	}
}

func TestFleetOptions(t *testing.T) {
	st := newMemStore(time.Now)
	if _, err := NewManager(bg, Options{Timeout: time.Hour, Rand: newRand(), Store: &fakeStore{}, Fleet: st}); err == nil {
		t.Error("Store and Fleet together accepted")
	}
	if _, err := NewManager(bg, Options{Timeout: time.Second, Rand: newRand(), Fleet: st}); err == nil {
		t.Error("a fleet with T/2 = 0 accepted")
	}

	// Disabled: no store call, no key, Run returns at once.
	fs := &faultStore{inner: st, calls: map[string]int{}}
	m, err := NewManager(bg, Options{Timeout: 0, Rand: newRand(), Fleet: fs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Encrypting(bg); !errors.Is(err, ErrDisabled) {
		t.Errorf("Encrypting = %v", err)
	}
	if _, err := m.Decrypting(bg, [proto.TicketNameLen]byte{1}); !errors.Is(err, ErrDisabled) {
		t.Errorf("Decrypting = %v", err)
	}
	within(t, "Run of a disabled manager", func() { m.Run(bg) })
	if err := m.Refresh(bg); err != nil || len(fs.calls) != 0 {
		t.Errorf("disabled manager: Refresh %v, store calls %v", err, fs.calls)
	}

	// The other modes: Run returns, Refresh does nothing, introspection
	// lists the two-key ring as local keys.
	for _, s := range []*fakeStore{nil, {}} {
		e := newEnv(t, time.Hour, s)
		within(t, "Run without a fleet", func() { e.m.Run(bg) })
		if err := e.m.Refresh(bg); err != nil {
			t.Error(err)
		}
		a := e.enc(t)
		e.clk.Set(a.Expiry)
		b := e.enc(t)
		keys := e.m.Keys()
		if len(keys) != 2 || keys[0].Name != a.Name || keys[1].Name != b.Name || !keys[0].Local || keys[1].Expiry != b.Expiry {
			t.Errorf("Keys = %+v", keys)
		}
		st := e.m.Stats()
		if want := map[bool]string{true: "memory", false: "store"}[s == nil]; st.Mode != want || st.Keys != 2 || st.Digest != "" || e.m.Digest() != "" {
			t.Errorf("Stats = %+v", st)
		}
	}
}

// Close wipes every key, stops refreshes and answers as disabled.
func TestFleetCloseWipes(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	a := f.join("a")
	a.enc(t)
	var ptrs []*proto.TicketKey
	r := a.m.fleet()
	r.mu.Lock()
	for _, en := range r.entries {
		ptrs = append(ptrs, en.key)
	}
	r.mu.Unlock()
	a.m.Close()
	for _, p := range ptrs {
		if *p != (proto.TicketKey{}) {
			t.Error("Close left key material")
		}
	}
	calls := a.st.count("Epochs")
	if err := a.m.Refresh(bg); err != nil || a.st.count("Epochs") != calls {
		t.Errorf("Refresh after Close: %v, store called", err)
	}
	if _, err := a.m.Encrypting(bg); !errors.Is(err, ErrDisabled) {
		t.Errorf("Encrypting after Close = %v", err)
	}
	if len(a.m.Keys()) != 0 {
		t.Error("keys listed after Close")
	}
	a.m.Close()
}

// Members starting, refreshing and serving at once, the clock moving:
// create-if-absent gives one key per epoch and every member converges.
func TestFleetConcurrent(t *testing.T) {
	f := newTestFleet(t, 120*time.Second)
	ms := make([]*member, 6)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range ms {
		wg.Go(func() {
			mb := &member{name: fmt.Sprint("m", i), st: f.newStore(), log: &testlog.Recorder{}, now: f.clk.Now}
			m, err := NewManager(bg, Options{Timeout: f.timeout, Rand: newSeededRand(uint64(100 + i)), Log: mb.log.Logger(),
				Now: mb.now, Fleet: mb.st, StoreTimeout: time.Minute})
			if err != nil {
				t.Error(err)
				return
			}
			mb.m = m
			mu.Lock()
			ms[i] = mb
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, mb := range ms {
		t.Cleanup(mb.m.Close)
	}
	stop := make(chan struct{})
	var clockWG sync.WaitGroup
	clockWG.Go(func() {
		for range 200 {
			f.clk.mu.Lock()
			f.clk.now = f.clk.now.Add(time.Second)
			f.clk.mu.Unlock()
			runtime.Gosched()
		}
		close(stop)
	})
	for _, mb := range ms {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%10 == 0 {
					mb.m.Refresh(bg)
				}
				k, err := mb.m.Encrypting(bg)
				if err != nil {
					t.Error(err)
					return
				}
				for _, o := range ms {
					if got, err := o.m.Decrypting(bg, k.Name); err == nil && got != k {
						t.Error("Decrypting returned another key")
						return
					}
				}
				mb.m.Keys()
				mb.m.Stats()
			}
		})
	}
	clockWG.Wait()
	wg.Wait()
	// Two rounds: a key one member offers back in the first (a local key
	// of the previous epoch, say) reaches the others in the second.
	for range 2 {
		for _, mb := range ms {
			if err := mb.m.Refresh(bg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, mb := range ms[1:] {
		if mb.m.Digest() != ms[0].m.Digest() {
			t.Errorf("%s: digest %s, m0 %s", mb.name, mb.m.Digest(), ms[0].m.Digest())
		}
	}
	e := f.baseEpoch()
	for _, ep := range []int64{e, e + 1} {
		stored, _ := f.store.get(ep)
		for _, mb := range ms {
			if k, ok := mb.m.fleetKeyFor(ep); !ok || k != stored {
				t.Errorf("%s: key of epoch %d is not the stored one", mb.name, ep)
			}
		}
	}
}

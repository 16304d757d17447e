package tktkey

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

var bg = context.Background()

const t0 = 1_700_000_000

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock                { return &clock{now: time.Unix(t0, 0)} }
func (c *clock) Now() time.Time       { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(sec int64)        { c.SetTime(time.Unix(sec, 0)) }
func (c *clock) SetTime(tm time.Time) { c.mu.Lock(); c.now = tm; c.mu.Unlock() }
func (c *clock) Rel() int64           { return c.Now().Unix() - t0 }
func (c *clock) Advance(sec int64) {
	c.mu.Lock()
	c.now = c.now.Add(time.Duration(sec) * time.Second)
	c.mu.Unlock()
}

// counterRand yields distinct, predictable bytes, and fails on demand
// (after failAfter more bytes, when failAfter >= 0).
type counterRand struct {
	mu        sync.Mutex
	next      byte
	failAfter int
	reads     int
}

var errRand = errors.New("PRNG exploded")

func newRand() *counterRand { return &counterRand{next: 1, failAfter: -1} }

func (r *counterRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	n := len(p)
	if r.failAfter >= 0 {
		n = min(n, r.failAfter)
		r.failAfter -= n
	}
	for i := range n {
		p[i] = r.next
		r.next++
		if r.next == 0 {
			r.next = 1
		}
	}
	if n < len(p) {
		return n, errRand
	}
	return n, nil
}

func (r *counterRand) failIn(n int) { r.mu.Lock(); r.failAfter = n; r.mu.Unlock() }

// fakeStore keeps the Ring (the pointers themselves) of every Save.
type fakeStore struct {
	mu      sync.Mutex
	load    Ring
	loadErr error
	saveErr error
	loads   int
	saves   []Ring
}

func (s *fakeStore) Load(context.Context) (Ring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	return s.load, s.loadErr
}

func (s *fakeStore) Save(_ context.Context, r Ring) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves = append(s.saves, r)
	return s.saveErr
}

func (s *fakeStore) saved() []Ring {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Ring(nil), s.saves...)
}

type env struct {
	m     *Manager
	clk   *clock
	rnd   *counterRand
	store *fakeStore
	log   *testlog.Recorder
}

func newEnv(t *testing.T, timeout time.Duration, store *fakeStore) *env {
	t.Helper()
	e := &env{clk: newClock(), rnd: newRand(), store: store, log: &testlog.Recorder{}}
	o := Options{Timeout: timeout, Rand: e.rnd, Log: e.log.Logger(), Now: e.clk.Now}
	if store != nil {
		o.Store = store
	}
	m, err := NewManager(bg, o)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	e.m = m
	return e
}

func (e *env) enc(t *testing.T) proto.TicketKey {
	t.Helper()
	k, err := e.m.Encrypting(bg)
	if err != nil {
		t.Fatalf("Encrypting at t0%+d: %v", e.clk.Rel(), err)
	}
	return k
}

func (e *env) canDecrypt(t *testing.T, k proto.TicketKey) bool {
	t.Helper()
	got, err := e.m.Decrypting(bg, k.Name)
	switch {
	case err == nil:
		if got != k {
			t.Fatalf("Decrypting returned %+v, want %+v", got, k)
		}
		return true
	case errors.Is(err, ErrUnknownKey):
		return false
	}
	t.Fatalf("Decrypting: unexpected error %v", err)
	return false
}

func isZero(k *proto.TicketKey) bool { return *k == proto.TicketKey{} }

func TestFirstKeyExpiry(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		want    int64 // Expiry - now
	}{
		{3600 * time.Second, 1799},
		{3601 * time.Second, 1799}, // 3601/2 = 1800 in integer division
		{3601*time.Second + 999*time.Millisecond, 1799},
		{121 * time.Second, 59},
		{120 * time.Second, 59},
		{125 * time.Second, 61},
		{8640000 * time.Second, 4319999},
	} {
		e := newEnv(t, tc.timeout, nil)
		k := e.enc(t)
		if got := k.Expiry - t0; got != tc.want {
			t.Errorf("timeout %v: first key expires at now%+d, want now%+d", tc.timeout, got, tc.want)
		}
		if k.Name == [proto.TicketNameLen]byte{} || k.AES == [proto.TicketKeyLen]byte{} || k.HMAC == [proto.TicketMACLen]byte{} {
			t.Errorf("timeout %v: key material not filled: %+v", tc.timeout, k)
		}
		if k.Name == [proto.TicketNameLen]byte(k.AES[:proto.TicketNameLen]) {
			t.Errorf("name and AES key are the same bytes")
		}
	}
}

// The sub-second part of the clock does not count: Postfix uses time(2).
func TestExpiryUsesWholeSeconds(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	e.clk.SetTime(time.Unix(t0, 999_999_999))
	if k := e.enc(t); k.Expiry != t0+1799 {
		t.Errorf("Expiry = t0%+d, want t0+1799", k.Expiry-t0)
	}
}

func TestRotation(t *testing.T) {
	st := &fakeStore{}
	e := newEnv(t, time.Hour, st) // half = 1800

	a := e.enc(t)
	if len(st.saved()) != 1 {
		t.Fatalf("first key: %d saves, want 1", len(st.saved()))
	}
	aPtr := st.saved()[0].Current
	if *aPtr != a || st.saved()[0].Previous != nil {
		t.Fatalf("first save = %+v, want current A and no previous", st.saved()[0])
	}

	// The same key until its expiry.
	for _, at := range []int64{1, 900, 1798} {
		e.clk.Set(t0 + at)
		if k := e.enc(t); k != a {
			t.Fatalf("at t0+%d Encrypting returned a new key", at)
		}
	}
	if len(st.saved()) != 1 {
		t.Errorf("Save called %d times without a rotation", len(st.saved()))
	}

	// At Expiry <= now: rotation.
	e.clk.Set(a.Expiry)
	b := e.enc(t)
	if b.Name == a.Name {
		t.Fatal("no rotation at the current key's expiry")
	}
	if b.Expiry != a.Expiry+1799 {
		t.Errorf("new key expiry = t0%+d, want t0%+d", b.Expiry-t0, a.Expiry+1799-t0)
	}
	if k := e.enc(t); k != b {
		t.Error("the new key is not current")
	}
	saves := st.saved()
	if len(saves) != 2 || *saves[1].Current != b || saves[1].Previous != aPtr {
		t.Fatalf("second save = %+v, want current B and previous A", saves[len(saves)-1])
	}
	bPtr := saves[1].Current

	// A still decrypts while A.Expiry + T/2 > now.
	e.clk.Set(a.Expiry + 1799)
	if !e.canDecrypt(t, a) || !e.canDecrypt(t, b) {
		t.Fatal("A and B must both decrypt at A.Expiry + T/2 - 1")
	}
	e.clk.Set(a.Expiry + 1800)
	if e.canDecrypt(t, a) {
		t.Error("A still decrypts at A.Expiry + T/2")
	}
	if !e.canDecrypt(t, b) {
		t.Error("B must decrypt")
	}

	// A third key drops A from the ring and wipes it (A is also too old
	// by then; the next rotation shows B leaving while still young).
	e.clk.Set(b.Expiry)
	c := e.enc(t)
	if c == b || c == a {
		t.Fatal("no rotation at B's expiry")
	}
	if !isZero(aPtr) {
		t.Errorf("the retired key A was not wiped: %+v", *aPtr)
	}
	if isZero(bPtr) || *bPtr != b {
		t.Errorf("B, now previous, was changed: %+v", *bPtr)
	}
	if saves := st.saved(); len(saves) != 3 || saves[2].Current == nil || *saves[2].Current != c || saves[2].Previous != bPtr {
		t.Errorf("third save = %+v, want current C and previous B", saves[len(saves)-1])
	}
	if !e.canDecrypt(t, b) || !e.canDecrypt(t, c) {
		t.Error("B and C must decrypt right after the rotation")
	}
	e.clk.Set(c.Expiry)
	d := e.enc(t)
	// B would still be within its decryption window (B.Expiry + 1800 >
	// C.Expiry = B.Expiry + 1799), but it left the ring.
	if e.canDecrypt(t, b) {
		t.Error("B decrypts after two rotations: the ring holds only two keys")
	}
	if !isZero(bPtr) {
		t.Errorf("B not wiped after leaving the ring")
	}
	if !e.canDecrypt(t, c) || !e.canDecrypt(t, d) {
		t.Error("C and D must decrypt")
	}
}

// Without a store, a dropped key is just as gone.
func TestRotationWithoutStore(t *testing.T) {
	e := newEnv(t, 600*time.Second, nil) // half = 300
	a := e.enc(t)
	e.clk.Set(a.Expiry)
	b := e.enc(t)
	e.clk.Set(b.Expiry)
	c := e.enc(t)
	if a == b || b == c {
		t.Fatal("no rotation")
	}
	// Within A's window by time (A.Expiry + 300 > now) but out of the ring.
	e.clk.Set(a.Expiry + 299)
	if e.canDecrypt(t, a) {
		t.Error("the third key did not push A out of the ring")
	}
	if !e.canDecrypt(t, b) || !e.canDecrypt(t, c) {
		t.Error("B and C must decrypt")
	}
}

func TestDecryptingWindow(t *testing.T) {
	e := newEnv(t, 121*time.Second, nil) // half = 60
	a := e.enc(t)                        // expires t0+59
	for _, tc := range []struct {
		at   int64
		want bool
	}{{0, true}, {59, true}, {118, true}, {119, false}, {1000, false}} {
		e.clk.Set(t0 + tc.at)
		if got := e.canDecrypt(t, a); got != tc.want {
			t.Errorf("at t0+%d: decrypts = %v, want %v", tc.at, got, tc.want)
		}
	}
	// A clock that comes back makes it decrypt again: the key is kept
	// until rotated out, only the check is by time.
	e.clk.Set(t0 + 10)
	if !e.canDecrypt(t, a) {
		t.Error("key lost after one failed decryption check")
	}
}

func TestDecryptingUnknownName(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	if _, err := e.m.Decrypting(bg, [proto.TicketNameLen]byte{1, 2, 3}); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("empty ring: Decrypting = %v, want ErrUnknownKey", err)
	}
	a := e.enc(t)
	other := a.Name
	other[15] ^= 1
	if _, err := e.m.Decrypting(bg, other); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Decrypting(unknown) = %v, want ErrUnknownKey", err)
	}
	if _, err := e.m.Decrypting(bg, [proto.TicketNameLen]byte{}); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Decrypting(zero name) = %v, want ErrUnknownKey", err)
	}
}

func TestDisabled(t *testing.T) {
	for _, timeout := range []time.Duration{0, -time.Second} {
		st := &fakeStore{}
		e := newEnv(t, timeout, st)
		if _, err := e.m.Encrypting(bg); !errors.Is(err, ErrDisabled) {
			t.Errorf("timeout %v: Encrypting = %v, want ErrDisabled", timeout, err)
		}
		if _, err := e.m.Decrypting(bg, [proto.TicketNameLen]byte{1}); !errors.Is(err, ErrDisabled) {
			t.Errorf("timeout %v: Decrypting = %v, want ErrDisabled", timeout, err)
		}
		if len(st.saved()) != 0 || e.rnd.reads != 0 {
			t.Errorf("timeout %v: disabled manager made or saved keys", timeout)
		}
	}
}

// A clock that went backwards does not rotate: the current key still
// encrypts, and the ring stays sorted with Current expiring last.
func TestClockBackwards(t *testing.T) {
	st := &fakeStore{}
	e := newEnv(t, time.Hour, st)
	a := e.enc(t)
	e.clk.Set(a.Expiry)
	b := e.enc(t)
	e.clk.Set(t0 - 100_000)
	if k := e.enc(t); k != b {
		t.Errorf("after the clock went back, Encrypting returned %+v, want the current key", k)
	}
	if n := len(st.saved()); n != 2 {
		t.Errorf("%d saves, want 2 (no rotation when the clock goes back)", n)
	}
	if !e.canDecrypt(t, a) || !e.canDecrypt(t, b) {
		t.Error("both keys must still decrypt")
	}
	r := st.saved()[1]
	if r.Current.Expiry < r.Previous.Expiry {
		t.Errorf("ring not sorted: current expires %d, previous %d", r.Current.Expiry, r.Previous.Expiry)
	}
}

// With T/2 = 1s a new key expires at now, the same second as a current
// key that expires now: it must not displace the current key (Postfix
// keeps keys[0] expiring last).
func TestRotateKeepsCurrentExpiringLast(t *testing.T) {
	st := &fakeStore{}
	e := newEnv(t, 2*time.Second, st) // half = 1
	a := e.enc(t)
	if a.Expiry != t0 {
		t.Fatalf("first key expires at t0%+d, want t0", a.Expiry-t0)
	}
	b := e.enc(t) // a.Expiry <= now: a new key, expiring at now too
	if b.Name == a.Name || b.Expiry != t0 {
		t.Fatalf("second key = %+v", b)
	}
	saves := st.saved()
	r := saves[len(saves)-1]
	if r.Current == nil || r.Previous == nil {
		t.Fatalf("ring = %+v, want two keys", r)
	}
	if r.Current.Name != a.Name || r.Previous.Name != b.Name {
		t.Errorf("ring current/previous = %x/%x, want A %x then B %x", r.Current.Name, r.Previous.Name, a.Name, b.Name)
	}
	if r.Current.Expiry < r.Previous.Expiry {
		t.Errorf("ring not sorted")
	}

	// Now a loaded ring whose current outlives any key made now.
	st2 := &fakeStore{load: Ring{Current: &proto.TicketKey{Name: [proto.TicketNameLen]byte{9}, Expiry: t0 + 1000}}}
	e2 := newEnv(t, 2*time.Second, st2)
	e2.clk.Set(t0 + 1000) // the loaded key just expired
	n := e2.enc(t)
	if n.Name == st2.load.Current.Name {
		t.Fatal("an expired key was returned for encryption")
	}
	r = st2.saved()[0]
	if r.Current.Expiry < r.Previous.Expiry {
		t.Errorf("ring not sorted: current %d, previous %d", r.Current.Expiry, r.Previous.Expiry)
	}
}

func TestStoreLoadedAtStart(t *testing.T) {
	cur := &proto.TicketKey{Name: [proto.TicketNameLen]byte{'c'}, AES: [proto.TicketKeyLen]byte{1}, HMAC: [proto.TicketMACLen]byte{2}, Expiry: t0 + 500}
	prev := &proto.TicketKey{Name: [proto.TicketNameLen]byte{'p'}, AES: [proto.TicketKeyLen]byte{3}, HMAC: [proto.TicketMACLen]byte{4}, Expiry: t0 - 500}
	st := &fakeStore{load: Ring{Current: cur, Previous: prev}}
	e := newEnv(t, time.Hour, st)
	if st.loads != 1 {
		t.Errorf("Load called %d times, want 1", st.loads)
	}
	if k := e.enc(t); k != *cur {
		t.Errorf("Encrypting = %+v, want the loaded current key", k)
	}
	if len(st.saved()) != 0 {
		t.Error("Save called without a rotation")
	}
	if !e.canDecrypt(t, *prev) || !e.canDecrypt(t, *cur) {
		t.Error("loaded keys must decrypt")
	}
	if e.rnd.reads != 0 {
		t.Error("made a key although the loaded one is current")
	}
}

func TestStoreLoadError(t *testing.T) {
	errLoad := errors.New("key file unreadable")
	_, err := NewManager(bg, Options{Timeout: time.Hour, Rand: newRand(), Store: &fakeStore{loadErr: errLoad}})
	if !errors.Is(err, errLoad) {
		t.Errorf("NewManager = %v, want the Load error", err)
	}
}

func TestStoreSaveFailureStillServes(t *testing.T) {
	st := &fakeStore{saveErr: errors.New("disk full")}
	e := newEnv(t, time.Hour, st)
	a := e.enc(t)
	if !strings.Contains(e.log.String(), "disk full") {
		t.Errorf("Save failure not logged; log: %q", e.log.String())
	}
	if k := e.enc(t); k != a {
		t.Error("the key made when Save failed is not kept as current")
	}
	if !e.canDecrypt(t, a) {
		t.Error("the key made when Save failed does not decrypt")
	}
	if len(st.saved()) != 1 {
		t.Errorf("Save called %d times, want 1", len(st.saved()))
	}
	// Without a logger a Save failure is not fatal either.
	m, err := NewManager(bg, Options{Timeout: time.Hour, Rand: newRand(), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Encrypting(bg); err != nil {
		t.Errorf("Encrypting without a logger: %v", err)
	}
}

func TestRandFailureLeavesRing(t *testing.T) {
	for _, failAt := range []int{0, proto.TicketNameLen, proto.TicketNameLen + proto.TicketKeyLen + 5} {
		t.Run(fmt.Sprint("after", failAt), func(t *testing.T) {
			st := &fakeStore{}
			e := newEnv(t, time.Hour, st)

			// No key yet, and the PRNG fails: no key at all.
			e.rnd.failIn(failAt)
			if _, err := e.m.Encrypting(bg); !errors.Is(err, errRand) {
				t.Fatalf("Encrypting with a failing PRNG = %v", err)
			}
			if len(st.saved()) != 0 {
				t.Fatal("saved a ring after a PRNG failure")
			}
			e.rnd.failIn(-1)
			a := e.enc(t)
			if a.Expiry != t0+1799 {
				t.Fatalf("key after recovery expires at t0%+d", a.Expiry-t0)
			}

			// A rotation that fails keeps the ring as it was.
			e.clk.Set(a.Expiry)
			e.rnd.failIn(failAt)
			if _, err := e.m.Encrypting(bg); !errors.Is(err, errRand) {
				t.Fatalf("rotation with a failing PRNG = %v", err)
			}
			if len(st.saved()) != 1 {
				t.Error("saved a ring after a failed rotation")
			}
			if !e.canDecrypt(t, a) {
				t.Error("the current key was lost by a failed rotation")
			}
			r := st.saved()[0]
			if r.Current == nil || *r.Current != a || r.Previous != nil {
				t.Errorf("ring changed by a failed rotation: %+v", r)
			}
			e.rnd.failIn(-1)
			b := e.enc(t)
			if b == a || b.Expiry != a.Expiry+1799 {
				t.Errorf("rotation after recovery = %+v", b)
			}
			if !e.canDecrypt(t, a) {
				t.Error("A must still decrypt as the previous key")
			}
		})
	}
}

func TestCloseWipes(t *testing.T) {
	st := &fakeStore{}
	e := newEnv(t, time.Hour, st)
	a := e.enc(t)
	e.clk.Set(a.Expiry)
	b := e.enc(t)
	r := st.saved()[1]
	e.m.Close()
	if !isZero(r.Current) || !isZero(r.Previous) {
		t.Errorf("Close left key material: %+v %+v", *r.Current, *r.Previous)
	}
	if e.canDecrypt(t, a) || e.canDecrypt(t, b) {
		t.Error("keys still decrypt after Close")
	}
	// Close twice is harmless.
	e.m.Close()
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, 120*time.Second, &fakeStore{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if w == 0 {
					e.clk.Advance(1)
				}
				k, err := e.m.Encrypting(bg)
				if err != nil {
					t.Error(err)
					return
				}
				if k.Name == [proto.TicketNameLen]byte{} {
					t.Error("Encrypting returned a wiped key")
					return
				}
				// A key may leave the ring if two rotations happen in
				// between; anything but ErrUnknownKey is wrong.
				if got, err := e.m.Decrypting(bg, k.Name); err == nil && got != k {
					t.Errorf("Decrypting returned another key")
				} else if err != nil && !errors.Is(err, ErrUnknownKey) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestLoadedPreviousKeySurvivesFirstRotation(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	prev := &proto.TicketKey{Expiry: now.Unix() - 10}
	prev.Name[0] = 7
	st := &ringOnlyStore{ring: Ring{Previous: prev}}
	m, err := NewManager(context.Background(), Options{Timeout: time.Hour, Rand: cryptorand.Reader, Store: st, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Encrypting(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decrypting(context.Background(), prev.Name); err != nil {
		t.Fatalf("the loaded previous key no longer decrypts after the first rotation: %v", err)
	}
}

type ringOnlyStore struct{ ring Ring }

func (s *ringOnlyStore) Load(context.Context) (Ring, error)   { return s.ring, nil }
func (s *ringOnlyStore) Save(_ context.Context, r Ring) error { s.ring = r; return nil }

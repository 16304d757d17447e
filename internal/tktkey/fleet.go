package tktkey

// Fleet mode. Time is cut into epochs of H = T/2 seconds. The key of
// epoch e has Expiry (e+1)*H - 1, as Postfix would give a key made at the
// epoch's start, and the wire semantics are Postfix's: it encrypts while
// Expiry > now and decrypts while Expiry + H > now. Encrypting therefore
// moves to epoch e+1's key in the last second of epoch e (handing out a
// key with Expiry == now would make smtpd, which caches keys until their
// Expiry, ask again on every handshake of that second). At any time three
// fleet keys decrypt: previous, current and next.
//
// The ring is kept by Refresh, never on the request path: Run calls it a
// quarter and three quarters into every epoch, so the next epoch's key is
// created (create-if-absent, one writer wins) and loaded by every member
// about 3H/4 before anyone encrypts with it, and at the latest H/4 before
// with the second refresh; a refresh that fails is retried every few
// seconds. Members whose clocks differ by much less than H/4 thus never
// issue a ticket another cannot decrypt yet. Only if the store stays away
// past the start of an epoch whose key was never loaded does a member
// make a local key for that epoch; tickets issued with it decrypt here
// until it expires, and the local key is offered to the store as the
// epoch's key when the store is back.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and limits of fleet mode.
const (
	DefaultStoreTimeout  = time.Second
	DefaultLookupTimeout = 10 * time.Millisecond // the Redis settings' default timeout

	// Unknown names are remembered for missTTL (bogus names cost one
	// store call a minute each at most), up to missEntries names; past
	// that the oldest is forgotten, which with one TTL for all is the
	// one expiring first.
	missTTL     = time.Minute
	missEntries = 4096
	// By-name lookups of names not remembered: a token bucket, so a
	// flood of fresh bogus names costs at most lookupBurst store calls
	// and then lookupRate a second. Legitimate lookups are rare: every
	// key the fleet encrypts with is loaded ahead.
	lookupRate  = 10
	lookupBurst = 20
	// Store calls outstanding at once, counting calls abandoned at their
	// deadline that have not returned yet: a store that ignores
	// deadlines holds these and then costs nothing more.
	maxInFlight = 8
	// Decrypt-only keys from the store besides the ring (found by name,
	// or replaced in the store by another key for their epoch).
	maxSpares = 8

	retryMin  = time.Second
	retryMax  = 30 * time.Second
	jitterMax = 30 * time.Second // and at most H/16
)

// errBusy reports that maxInFlight store calls are outstanding.
var errBusy = errors.New("tktkey: too many ticket key store calls outstanding")

type kind uint8

const (
	kindFleet kind = iota // the fleet's key of its epoch, as the store last said
	kindLocal             // made here for an epoch with no fleet key
	kindSpare             // from the store, decrypt-only
)

type entry struct {
	key   *Key
	epoch int64
	kind  kind
}

type infoLogger interface {
	Info(format string, args ...any)
}

// fleetState is the part of Manager used in fleet mode only.
type fleetState struct {
	fleet         EpochStore
	storeTimeout  time.Duration
	lookupTimeout time.Duration
	after         func(time.Duration) <-chan time.Time
	slots         chan struct{}
	done          chan struct{} // closed by Close

	refreshMu sync.Mutex // one refresh at a time; never held with mu by requests

	// Under Manager.mu.
	entries     []*entry
	closed      bool
	down        bool // the last refresh failed (logged once per transition)
	lastRefresh time.Time
	misses      missTable
	bucket      tokenBucket

	counters fleetCounters
}

type fleetCounters struct {
	refreshes, refreshFailures            atomic.Uint64
	storeCalls, storeErrors, storeTimeout atomic.Uint64
	nameLookups, nameHits                 atomic.Uint64
	negativeHits, lookupsShed             atomic.Uint64
	localKeys, displaced                  atomic.Uint64
}

func (m *Manager) initFleet(o Options) {
	m.fleet = o.Fleet
	m.storeTimeout = orDefault(o.StoreTimeout, DefaultStoreTimeout)
	m.lookupTimeout = orDefault(o.LookupTimeout, DefaultLookupTimeout)
	m.after = o.After
	if m.after == nil {
		m.after = time.After
	}
	m.slots = make(chan struct{}, maxInFlight)
	m.done = make(chan struct{})
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// epochAt is the epoch whose key encrypts at now: the first with
// Expiry > now.
func (m *Manager) epochAt(now int64) int64 { return floorDiv(now+1, m.half) }

func (m *Manager) expiryOf(epoch int64) int64 { return (epoch+1)*m.half - 1 }

func (m *Manager) info(format string, args ...any) {
	switch l := m.log.(type) {
	case nil:
	case infoLogger:
		l.Info(format, args...)
	default:
		l.Warn(format, args...)
	}
}

func (m *Manager) warn(format string, args ...any) {
	if m.log != nil {
		m.log.Warn(format, args...)
	}
}

func (m *Manager) fleetEncrypting() (Key, error) {
	t := m.now()
	now := t.Unix()
	e := m.epochAt(now)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Key{}, ErrDisabled
	}
	m.prune(t)
	if en := m.find(kindFleet, e); en != nil {
		defer m.mu.Unlock()
		return *en.key, nil
	}
	if en := m.find(kindLocal, e); en != nil {
		defer m.mu.Unlock()
		return *en.key, nil
	}
	k := new(Key)
	if err := m.fill(k); err != nil {
		m.mu.Unlock()
		return Key{}, err
	}
	k.Expiry = m.expiryOf(e)
	m.entries = append(m.entries, &entry{key: k, epoch: e, kind: kindLocal})
	out := *k
	m.mu.Unlock()
	m.counters.localKeys.Add(1)
	m.warn("session ticket keys: no fleet key for epoch %d (store unavailable); using a local key", e)
	return out, nil
}

func (m *Manager) fleetDecrypting(ctx context.Context, name [NameLen]byte) (Key, error) {
	t := m.now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Key{}, ErrUnknownKey
	}
	m.prune(t)
	if en := m.byName(name); en != nil {
		defer m.mu.Unlock()
		return *en.key, nil // prune left only keys that decrypt
	}
	if m.misses.hit(name, t) {
		m.mu.Unlock()
		m.counters.negativeHits.Add(1)
		return Key{}, ErrUnknownKey
	}
	if !m.bucket.take(t) {
		m.mu.Unlock()
		m.counters.lookupsShed.Add(1)
		return Key{}, ErrUnknownKey
	}
	m.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.lookupTimeout)
		defer cancel()
	}
	k, err := storeCall(m, ctx, func(ctx context.Context) (Key, error) {
		m.counters.nameLookups.Add(1)
		return m.fleet.ByName(ctx, name)
	}, (*Key).Wipe)
	switch {
	case errors.Is(err, errBusy):
		m.counters.lookupsShed.Add(1)
		return Key{}, ErrUnknownKey
	case err != nil && !errors.Is(err, ErrUnknownKey):
		// Counted by storeCall; the store or its breaker reports the
		// outage, a ticket it cannot answer is just a full handshake.
		return Key{}, ErrUnknownKey
	}
	t = m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil || k.Name != name || k.Expiry+m.half <= t.Unix() || m.closed {
		k.Wipe()
		if !m.closed {
			m.misses.add(name, t)
		}
		return Key{}, ErrUnknownKey
	}
	m.counters.nameHits.Add(1)
	if m.byName(name) == nil {
		kc := k
		m.entries = append(m.entries, &entry{key: &kc, epoch: floorDiv(k.Expiry+1, m.half) - 1, kind: kindSpare})
		m.trimSpares()
	}
	return k, nil
}

// storeCall runs f with ctx and returns by ctx's deadline even if f does
// not; discard wipes what f returns after nobody waits for it any more.
func storeCall[T any](m *Manager, ctx context.Context, f func(context.Context) (T, error), discard func(*T)) (T, error) {
	var zero T
	select {
	case m.slots <- struct{}{}:
	default:
		return zero, errBusy
	}
	m.counters.storeCalls.Add(1)
	type result struct {
		v   T
		err error
	}
	ch := make(chan result)
	gone := make(chan struct{})
	go func() {
		defer func() { <-m.slots }()
		v, err := f(ctx)
		select {
		case ch <- result{v, err}:
		case <-gone:
			discard(&v)
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil && !errors.Is(r.err, ErrUnknownKey) {
			m.counters.storeErrors.Add(1)
			if ctx.Err() != nil {
				m.counters.storeTimeout.Add(1)
			}
		}
		return r.v, r.err
	case <-ctx.Done():
		close(gone)
		m.counters.storeErrors.Add(1)
		m.counters.storeTimeout.Add(1)
		return zero, ctx.Err()
	}
}

func wipeKeys(keys *map[int64]Key) {
	for e := range *keys {
		(*keys)[e] = Key{}
	}
}

// Refresh loads the previous, current and next epochs' keys from the
// store and creates the current and next ones where missing (offering
// back a key held here if the store lost it, or this member's local key).
// It is bounded by StoreTimeout and holds no lock that requests take
// while it waits for the store. Run calls it; it is exported for the
// initial load and for tests.
func (m *Manager) Refresh(ctx context.Context) error {
	if m.fleet == nil || m.disabled {
		return nil
	}
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, m.storeTimeout)
	defer cancel()
	err := m.refresh(ctx)
	m.noteRefresh(err)
	return err
}

func (m *Manager) refresh(ctx context.Context) error {
	cur := m.epochAt(m.now().Unix())
	want := []int64{cur - 1, cur, cur + 1}

	// Snapshot under the lock; the store is called without it.
	held := make(map[int64]Key)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	for _, k := range []kind{kindFleet, kindLocal} {
		for _, e := range want {
			if _, ok := held[e]; !ok {
				if en := m.find(k, e); en != nil {
					held[e] = *en.key
				}
			}
		}
	}
	m.mu.Unlock()
	defer wipeKeys(&held)

	got, err := storeCall(m, ctx, func(ctx context.Context) (map[int64]Key, error) {
		return m.fleet.Epochs(ctx, want)
	}, wipeKeys)
	if err != nil {
		return fmt.Errorf("load the ring: %w", err)
	}
	defer wipeKeys(&got)
	var errs []error
	for e, k := range got {
		if err := m.check(e, k, want); err != nil {
			got[e] = Key{}
			delete(got, e)
			errs = append(errs, err)
		}
	}
	for _, e := range want {
		if _, ok := got[e]; ok {
			continue
		}
		offer, ok := held[e]
		if !ok && e == cur-1 {
			continue // nobody makes a past epoch's key
		}
		if !ok {
			if err := m.fill(&offer); err != nil {
				errs = append(errs, fmt.Errorf("make the key of epoch %d: %w", e, err))
				continue
			}
			offer.Expiry = m.expiryOf(e)
		}
		until := time.Unix(offer.Expiry+m.half, 0)
		if !until.After(m.now()) {
			// A slow refresh: the epoch went by meanwhile.
			offer.Wipe()
			continue
		}
		// The call owns its copy: it may outlive this refresh.
		mine := offer
		offer.Wipe()
		k, err := storeCall(m, ctx, func(ctx context.Context) (Key, error) {
			defer mine.Wipe()
			return m.fleet.Create(ctx, e, mine, until)
		}, (*Key).Wipe)
		if err == nil {
			err = m.check(e, k, want)
		}
		if err != nil {
			k.Wipe()
			errs = append(errs, fmt.Errorf("create the key of epoch %d: %w", e, err))
			continue
		}
		got[e] = k
	}
	m.install(got)
	return errors.Join(errs...)
}

// check refuses a key that does not belong to the epoch it is stored
// under: a member with another session timeout, or a broken store.
func (m *Manager) check(e int64, k Key, want []int64) error {
	switch {
	case !slices.Contains(want, e):
		return fmt.Errorf("the store returned epoch %d, not asked for", e)
	case k.Expiry != m.expiryOf(e):
		return fmt.Errorf("the stored key of epoch %d expires at %d, not %d: do all members use the same session timeout?",
			e, k.Expiry, m.expiryOf(e))
	case k.Name == [NameLen]byte{} || k.AES == [AESKeyLen]byte{} || k.HMAC == [HMACKeyLen]byte{}:
		return fmt.Errorf("the stored key of epoch %d is empty", e)
	}
	return nil
}

// install makes the store's keys the ring's fleet keys. A fleet key the
// store no longer has for its epoch stays as a spare: tickets issued with
// it still decrypt here.
func (m *Manager) install(got map[int64]Key) {
	var notes []string
	var warns []string
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	t := m.now()
	cur := m.epochAt(t.Unix())
	for _, e := range slices.Sorted(maps.Keys(got)) {
		if e < cur-1 || e > cur+1 {
			continue // the epoch passed while the store answered
		}
		k := got[e]
		old := m.find(kindFleet, e)
		if old != nil && *old.key == k {
			continue
		}
		if old != nil {
			old.kind = kindSpare
			m.counters.displaced.Add(1)
			warns = append(warns, fmt.Sprintf("session ticket keys: the store holds another key for epoch %d; adopting it (the one held here still decrypts here)", e))
		}
		if same := m.byName(k.Name); same != nil {
			if *same.key != k {
				// The same name with other bytes: not a key to keep.
				m.remove(same)
			} else {
				if same.kind == kindLocal {
					notes = append(notes, fmt.Sprintf("session ticket keys: the local key of epoch %d is now the fleet's", e))
				}
				same.kind, same.epoch = kindFleet, e
				continue
			}
		}
		kc := k
		m.entries = append(m.entries, &entry{key: &kc, epoch: e, kind: kindFleet})
		if m.find(kindLocal, e) != nil {
			notes = append(notes, fmt.Sprintf("session ticket keys: fleet key of epoch %d adopted; the local key still decrypts here", e))
		}
	}
	m.prune(t)
	m.trimSpares()
	m.mu.Unlock()
	for _, w := range warns {
		m.warn("%s", w)
	}
	for _, n := range notes {
		m.info("%s", n)
	}
}

func (m *Manager) noteRefresh(err error) {
	m.counters.refreshes.Add(1)
	m.mu.Lock()
	was := m.down
	m.down = err != nil
	if err == nil {
		m.lastRefresh = m.now()
	}
	m.mu.Unlock()
	switch {
	case err != nil:
		m.counters.refreshFailures.Add(1)
		if !was {
			m.warn("session ticket keys: cannot refresh the fleet ring: %v; serving from the keys loaded", err)
		}
	case was:
		m.info("session ticket keys: fleet ring refreshed again")
	}
}

// Run keeps the fleet ring loaded until ctx is done or the manager is
// closed: a refresh a quarter and three quarters into every epoch (plus a
// jitter of up to min(H/16, 30s) drawn from the pool, so that members do
// not all call at once), and after a failure again in 1s, 2s, 4s ... up
// to 30s. It returns at once without a Fleet.
func (m *Manager) Run(ctx context.Context) {
	if m.fleet == nil || m.disabled {
		return
	}
	var backoff time.Duration
	for {
		m.mu.Lock()
		down := m.down
		m.mu.Unlock()
		wait := m.untilNextPoint()
		if down {
			backoff = min(max(2*backoff, retryMin), retryMax)
			wait = min(wait, backoff)
		} else {
			backoff = 0
			wait += m.jitter()
		}
		select {
		case <-ctx.Done():
			return
		case <-m.done:
			return
		case <-m.after(wait):
		}
		_ = m.Refresh(ctx) // logged per transition by Refresh
	}
}

// untilNextPoint is the time to the next scheduled refresh: H/4 or 3H/4
// into an epoch (counted from when its key starts encrypting).
func (m *Manager) untilNextPoint() time.Duration {
	now := time.Duration(m.now().UnixNano())
	h := time.Duration(m.half) * time.Second
	start := time.Duration(m.epochAt(int64(now/time.Second))*m.half-1) * time.Second
	for _, p := range []time.Duration{start + h/4, start + 3*h/4, start + h + h/4} {
		if p > now {
			return p - now
		}
	}
	return h / 4 // not reached: start + 5H/4 is past the epoch's end
}

func (m *Manager) jitter() time.Duration {
	var b [2]byte
	if _, err := m.rand.Read(b[:]); err != nil {
		return 0
	}
	span := min(time.Duration(m.half)*time.Second/16, jitterMax)
	return span * time.Duration(uint16(b[0])<<8|uint16(b[1])) / 65536
}

// The helpers below run under m.mu.

func (m *Manager) find(k kind, epoch int64) *entry {
	for _, en := range m.entries {
		if en.kind == k && en.epoch == epoch {
			return en
		}
	}
	return nil
}

func (m *Manager) byName(name [NameLen]byte) *entry {
	for _, en := range m.entries {
		if en.key.Name == name {
			return en
		}
	}
	return nil
}

func (m *Manager) remove(gone *entry) {
	gone.key.Wipe()
	m.entries = slices.DeleteFunc(m.entries, func(en *entry) bool { return en == gone })
}

// prune wipes the keys that no longer decrypt; their names are remembered
// as misses, since tickets issued with them keep coming back for a while.
func (m *Manager) prune(t time.Time) {
	now := t.Unix()
	m.entries = slices.DeleteFunc(m.entries, func(en *entry) bool {
		if en.key.Expiry+m.half > now {
			return false
		}
		m.misses.add(en.key.Name, t)
		en.key.Wipe()
		return true
	})
}

// trimSpares drops the spares that expire first beyond maxSpares.
func (m *Manager) trimSpares() {
	for {
		var first *entry
		n := 0
		for _, en := range m.entries {
			if en.kind == kindSpare {
				n++
				if first == nil || en.key.Expiry < first.key.Expiry {
					first = en
				}
			}
		}
		if n <= maxSpares {
			return
		}
		m.remove(first)
	}
}

func (m *Manager) closeFleet() {
	if m.closed {
		return
	}
	m.closed = true
	for _, en := range m.entries {
		en.key.Wipe()
	}
	m.entries = nil
	m.misses = missTable{}
	close(m.done)
}

// missTable remembers names the store did not know, for missTTL each,
// evicting the oldest when full.
type missTable struct {
	until map[[NameLen]byte]int64 // unix nanoseconds
	names [][NameLen]byte         // insertion order, a ring once full
	times []int64
	next  int
}

func (t *missTable) hit(name [NameLen]byte, now time.Time) bool {
	u, ok := t.until[name]
	if ok && u <= now.UnixNano() {
		delete(t.until, name)
		ok = false
	}
	return ok
}

func (t *missTable) add(name [NameLen]byte, now time.Time) {
	if t.until == nil {
		t.until = make(map[[NameLen]byte]int64)
	}
	u := now.Add(missTTL).UnixNano()
	if len(t.names) < missEntries {
		t.names = append(t.names, name)
		t.times = append(t.times, u)
	} else {
		old := t.names[t.next]
		if t.until[old] == t.times[t.next] {
			delete(t.until, old) // not re-added since
		}
		t.names[t.next], t.times[t.next] = name, u
		t.next = (t.next + 1) % missEntries
	}
	t.until[name] = u
}

func (t *missTable) len() int { return len(t.until) }

// tokenBucket limits by-name store lookups.
type tokenBucket struct {
	tokens  float64
	last    int64 // unix nanoseconds
	started bool
}

func (b *tokenBucket) take(now time.Time) bool {
	n := now.UnixNano()
	if !b.started {
		b.tokens, b.last, b.started = lookupBurst, n, true
	}
	if n > b.last {
		b.tokens = min(lookupBurst, b.tokens+float64(n-b.last)*lookupRate/1e9)
		b.last = n
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

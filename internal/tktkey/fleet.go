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

	"github.com/gotlsmgr/tlsmgr/proto"
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
	key   *proto.TicketKey
	epoch int64
	kind  kind
}

// fleetRing is the ring of a fleet: the keys of the epochs around now,
// shared through an EpochStore, and local or spare keys besides.
type fleetRing struct {
	ringParams
	store         EpochStore
	storeTimeout  time.Duration
	lookupTimeout time.Duration
	after         func(time.Duration) <-chan time.Time
	slots         chan struct{}
	done          chan struct{} // closed by close

	refreshMu sync.Mutex // one refresh at a time; never held with mu by requests

	mu          sync.Mutex // guards what follows, up to counters
	entries     []*entry
	closed      bool
	down        bool // the last refresh failed (logged once per transition)
	lastRefresh time.Time
	misses      missTable
	bucket      tokenBucket

	counters fleetCounters
}

type fleetCounters struct {
	refreshes, refreshFailures             atomic.Uint64
	storeCalls, storeErrors, storeTimeouts atomic.Uint64
	nameLookups, nameHits                  atomic.Uint64
	negativeHits, lookupsShed              atomic.Uint64
	localKeys, displaced                   atomic.Uint64
}

func newFleetRing(p ringParams, o Options) *fleetRing {
	r := &fleetRing{
		ringParams:    p,
		store:         o.Fleet,
		storeTimeout:  orDefault(o.StoreTimeout, DefaultStoreTimeout),
		lookupTimeout: orDefault(o.LookupTimeout, DefaultLookupTimeout),
		after:         o.After,
		slots:         make(chan struct{}, maxInFlight),
		done:          make(chan struct{}),
	}
	if r.after == nil {
		r.after = time.After
	}
	return r
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
func (r *fleetRing) epochAt(now int64) int64 { return floorDiv(now+1, r.half) }

func (r *fleetRing) expiryOf(epoch int64) int64 { return (epoch+1)*r.half - 1 }

func (r *fleetRing) encrypting(context.Context) (proto.TicketKey, error) {
	t := r.now()
	now := t.Unix()
	e := r.epochAt(now)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return proto.TicketKey{}, ErrDisabled
	}
	r.prune(t)
	if en := r.find(kindFleet, e); en != nil {
		defer r.mu.Unlock()
		return *en.key, nil
	}
	if en := r.find(kindLocal, e); en != nil {
		defer r.mu.Unlock()
		return *en.key, nil
	}
	k := new(proto.TicketKey)
	if err := r.fill(k); err != nil {
		r.mu.Unlock()
		return proto.TicketKey{}, err
	}
	k.Expiry = r.expiryOf(e)
	r.entries = append(r.entries, &entry{key: k, epoch: e, kind: kindLocal})
	out := *k
	r.mu.Unlock()
	r.counters.localKeys.Add(1)
	r.warn("session ticket keys: no fleet key for epoch %d (store unavailable); using a local key", e)
	return out, nil
}

func (r *fleetRing) decrypting(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	t := r.now()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return proto.TicketKey{}, ErrUnknownKey
	}
	r.prune(t)
	if en := r.byName(name); en != nil {
		defer r.mu.Unlock()
		return *en.key, nil // prune left only keys that decrypt
	}
	if r.misses.hit(name, t) {
		r.mu.Unlock()
		r.counters.negativeHits.Add(1)
		return proto.TicketKey{}, ErrUnknownKey
	}
	if !r.bucket.take(t) {
		r.mu.Unlock()
		r.counters.lookupsShed.Add(1)
		return proto.TicketKey{}, ErrUnknownKey
	}
	r.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.lookupTimeout)
		defer cancel()
	}
	k, err := storeCall(r, ctx, func(ctx context.Context) (proto.TicketKey, error) {
		r.counters.nameLookups.Add(1)
		return r.store.ByName(ctx, name)
	}, (*proto.TicketKey).Wipe)
	switch {
	case errors.Is(err, errBusy):
		r.counters.lookupsShed.Add(1)
		return proto.TicketKey{}, ErrUnknownKey
	case err != nil && !errors.Is(err, ErrUnknownKey):
		// Counted by storeCall; the store or its breaker reports the
		// outage, a ticket it cannot answer is just a full handshake.
		return proto.TicketKey{}, ErrUnknownKey
	}
	t = r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil || k.Name != name || k.Expiry+r.half <= t.Unix() || r.closed {
		k.Wipe()
		if !r.closed {
			r.misses.add(name, t)
		}
		return proto.TicketKey{}, ErrUnknownKey
	}
	r.counters.nameHits.Add(1)
	if r.byName(name) == nil {
		kc := k
		r.entries = append(r.entries, &entry{key: &kc, epoch: floorDiv(k.Expiry+1, r.half) - 1, kind: kindSpare})
		r.trimSpares()
	}
	return k, nil
}

// storeCall runs f with ctx and returns by ctx's deadline even if f does
// not; discard wipes what f returns after nobody waits for it any more.
func storeCall[T any](r *fleetRing, ctx context.Context, f func(context.Context) (T, error), discard func(*T)) (T, error) {
	var zero T
	select {
	case r.slots <- struct{}{}:
	default:
		return zero, errBusy
	}
	r.counters.storeCalls.Add(1)
	type result struct {
		v   T
		err error
	}
	ch := make(chan result)
	gone := make(chan struct{})
	go func() {
		defer func() { <-r.slots }()
		v, err := f(ctx)
		select {
		case ch <- result{v, err}:
		case <-gone:
			discard(&v)
		}
	}()
	select {
	case res := <-ch:
		if res.err != nil && !errors.Is(res.err, ErrUnknownKey) {
			r.counters.storeErrors.Add(1)
			if ctx.Err() != nil {
				r.counters.storeTimeouts.Add(1)
			}
		}
		return res.v, res.err
	case <-ctx.Done():
		close(gone)
		r.counters.storeErrors.Add(1)
		r.counters.storeTimeouts.Add(1)
		return zero, ctx.Err()
	}
}

func wipeKeys(keys *map[int64]proto.TicketKey) {
	for e := range *keys {
		(*keys)[e] = proto.TicketKey{}
	}
}

// refresh is Manager.Refresh with a Fleet: one refreshKeys at a time,
// bounded by StoreTimeout, its outcome counted and logged.
func (r *fleetRing) refresh(ctx context.Context) error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.storeTimeout)
	defer cancel()
	err := r.refreshKeys(ctx)
	r.noteRefresh(err)
	return err
}

// refreshKeys loads the previous, current and next epochs' keys from the
// store and creates the current and next ones where missing (offering
// back a key held here if the store lost it, or this member's local key),
// calling the store without holding mu.
func (r *fleetRing) refreshKeys(ctx context.Context) error {
	cur := r.epochAt(r.now().Unix())
	want := []int64{cur - 1, cur, cur + 1}

	// Snapshot under the lock; the store is called without it.
	held := make(map[int64]proto.TicketKey)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	for _, k := range []kind{kindFleet, kindLocal} {
		for _, e := range want {
			if _, ok := held[e]; !ok {
				if en := r.find(k, e); en != nil {
					held[e] = *en.key
				}
			}
		}
	}
	r.mu.Unlock()
	defer wipeKeys(&held)

	got, err := storeCall(r, ctx, func(ctx context.Context) (map[int64]proto.TicketKey, error) {
		return r.store.Epochs(ctx, want)
	}, wipeKeys)
	if err != nil {
		return fmt.Errorf("load the ring: %w", err)
	}
	defer wipeKeys(&got)
	var errs []error
	for e, k := range got {
		if err := r.check(e, k, want); err != nil {
			got[e] = proto.TicketKey{}
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
			if err := r.fill(&offer); err != nil {
				errs = append(errs, fmt.Errorf("make the key of epoch %d: %w", e, err))
				continue
			}
			offer.Expiry = r.expiryOf(e)
		}
		until := time.Unix(offer.Expiry+r.half, 0)
		if !until.After(r.now()) {
			// A slow refresh: the epoch went by meanwhile.
			offer.Wipe()
			continue
		}
		// The call owns its copy: it may outlive this refresh.
		mine := offer
		offer.Wipe()
		k, err := storeCall(r, ctx, func(ctx context.Context) (proto.TicketKey, error) {
			defer mine.Wipe()
			return r.store.Create(ctx, e, mine, until)
		}, (*proto.TicketKey).Wipe)
		if err == nil {
			err = r.check(e, k, want)
		}
		if err != nil {
			k.Wipe()
			errs = append(errs, fmt.Errorf("create the key of epoch %d: %w", e, err))
			continue
		}
		got[e] = k
	}
	r.install(got)
	return errors.Join(errs...)
}

// check refuses a key that does not belong to the epoch it is stored
// under: a member with another session timeout, or a broken store.
func (r *fleetRing) check(e int64, k proto.TicketKey, want []int64) error {
	switch {
	case !slices.Contains(want, e):
		return fmt.Errorf("the store returned epoch %d, not asked for", e)
	case k.Expiry != r.expiryOf(e):
		return fmt.Errorf("the stored key of epoch %d expires at %d, not %d: do all members use the same session timeout?",
			e, k.Expiry, r.expiryOf(e))
	case k.Name == [proto.TicketNameLen]byte{} || k.AES == [proto.TicketKeyLen]byte{} || k.HMAC == [proto.TicketMACLen]byte{}:
		return fmt.Errorf("the stored key of epoch %d is empty", e)
	}
	return nil
}

// install makes the store's keys the ring's fleet keys. A fleet key the
// store no longer has for its epoch stays as a spare: tickets issued with
// it still decrypt here.
func (r *fleetRing) install(got map[int64]proto.TicketKey) {
	var notes []string
	var warns []string
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	t := r.now()
	cur := r.epochAt(t.Unix())
	for _, e := range slices.Sorted(maps.Keys(got)) {
		if e < cur-1 || e > cur+1 {
			continue // the epoch passed while the store answered
		}
		k := got[e]
		old := r.find(kindFleet, e)
		if old != nil && *old.key == k {
			continue
		}
		if old != nil {
			old.kind = kindSpare
			r.counters.displaced.Add(1)
			warns = append(warns, fmt.Sprintf("session ticket keys: the store holds another key for epoch %d; adopting it (the one held here still decrypts here)", e))
		}
		if same := r.byName(k.Name); same != nil {
			if *same.key != k {
				// The same name with other bytes: not a key to keep.
				r.remove(same)
			} else {
				if same.kind == kindLocal {
					notes = append(notes, fmt.Sprintf("session ticket keys: the local key of epoch %d is now the fleet's", e))
				}
				same.kind, same.epoch = kindFleet, e
				continue
			}
		}
		kc := k
		r.entries = append(r.entries, &entry{key: &kc, epoch: e, kind: kindFleet})
		if r.find(kindLocal, e) != nil {
			notes = append(notes, fmt.Sprintf("session ticket keys: fleet key of epoch %d adopted; the local key still decrypts here", e))
		}
	}
	r.prune(t)
	r.trimSpares()
	r.mu.Unlock()
	for _, w := range warns {
		r.warn("%s", w)
	}
	for _, n := range notes {
		r.info("%s", n)
	}
}

func (r *fleetRing) noteRefresh(err error) {
	r.counters.refreshes.Add(1)
	r.mu.Lock()
	was := r.down
	r.down = err != nil
	if err == nil {
		r.lastRefresh = r.now()
	}
	r.mu.Unlock()
	switch {
	case err != nil:
		r.counters.refreshFailures.Add(1)
		if !was {
			r.warn("session ticket keys: cannot refresh the fleet ring: %v; serving from the keys loaded", err)
		}
	case was:
		r.info("session ticket keys: fleet ring refreshed again")
	}
}

// run is Manager.Run with a Fleet.
func (r *fleetRing) run(ctx context.Context) {
	var backoff time.Duration
	for {
		r.mu.Lock()
		down := r.down
		r.mu.Unlock()
		wait := r.untilNextPoint()
		if down {
			backoff = min(max(2*backoff, retryMin), retryMax)
			wait = min(wait, backoff)
		} else {
			backoff = 0
			wait += r.jitter()
		}
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case <-r.after(wait):
		}
		_ = r.refresh(ctx) // logged per transition by refresh
	}
}

// close wipes the keys and stops run; the ring answers as disabled from
// then on.
func (r *fleetRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	for _, en := range r.entries {
		en.key.Wipe()
	}
	r.entries = nil
	r.misses = missTable{}
	close(r.done)
}

// untilNextPoint is the time to the next scheduled refresh: H/4 or 3H/4
// into an epoch (counted from when its key starts encrypting).
func (r *fleetRing) untilNextPoint() time.Duration {
	now := time.Duration(r.now().UnixNano())
	h := time.Duration(r.half) * time.Second
	start := time.Duration(r.epochAt(int64(now/time.Second))*r.half-1) * time.Second
	for _, p := range []time.Duration{start + h/4, start + 3*h/4, start + h + h/4} {
		if p > now {
			return p - now
		}
	}
	return h / 4 // not reached: start + 5H/4 is past the epoch's end
}

func (r *fleetRing) jitter() time.Duration {
	var b [2]byte
	if _, err := r.rand.Read(b[:]); err != nil {
		return 0
	}
	span := min(time.Duration(r.half)*time.Second/16, jitterMax)
	return span * time.Duration(uint16(b[0])<<8|uint16(b[1])) / 65536
}

// The helpers below run under r.mu.

func (r *fleetRing) find(k kind, epoch int64) *entry {
	for _, en := range r.entries {
		if en.kind == k && en.epoch == epoch {
			return en
		}
	}
	return nil
}

func (r *fleetRing) byName(name [proto.TicketNameLen]byte) *entry {
	for _, en := range r.entries {
		if en.key.Name == name {
			return en
		}
	}
	return nil
}

func (r *fleetRing) remove(gone *entry) {
	gone.key.Wipe()
	r.entries = slices.DeleteFunc(r.entries, func(en *entry) bool { return en == gone })
}

// prune wipes the keys that no longer decrypt; their names are remembered
// as misses, since tickets issued with them keep coming back for a while.
func (r *fleetRing) prune(t time.Time) {
	now := t.Unix()
	r.entries = slices.DeleteFunc(r.entries, func(en *entry) bool {
		if en.key.Expiry+r.half > now {
			return false
		}
		r.misses.add(en.key.Name, t)
		en.key.Wipe()
		return true
	})
}

// trimSpares drops the spares that expire first beyond maxSpares.
func (r *fleetRing) trimSpares() {
	for {
		var first *entry
		n := 0
		for _, en := range r.entries {
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
		r.remove(first)
	}
}

// missTable remembers names the store did not know, for missTTL each,
// evicting the oldest when full.
type missTable struct {
	until map[[proto.TicketNameLen]byte]int64 // unix nanoseconds
	names [][proto.TicketNameLen]byte         // insertion order, a ring once full
	times []int64
	next  int
}

func (t *missTable) hit(name [proto.TicketNameLen]byte, now time.Time) bool {
	u, ok := t.until[name]
	if ok && u <= now.UnixNano() {
		delete(t.until, name)
		ok = false
	}
	return ok
}

func (t *missTable) add(name [proto.TicketNameLen]byte, now time.Time) {
	if t.until == nil {
		t.until = make(map[[proto.TicketNameLen]byte]int64)
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

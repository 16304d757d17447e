// Package redisstore is the session cache store shared by every tlsmgr
// daemon on the same Redis: an entry updated through any member is
// returned by every other, and a delete through any member is seen by all,
// while Redis is up.
//
// # In Redis
//
// An entry lives under
//
//	key_prefix + "c:" + cache name + ":" + seal.Name(id)
//
// (the cache name keeps the same id apart in the smtpd and smtp caches;
// the keyed hash keeps the id itself, which for the smtp client names a
// destination, out of Redis). Its value is
//
//	seal.Seal(aad = the key, Written as Unix nanoseconds, 8 bytes big-endian || session)
//
// so a value copied or moved under another key does not open. Redis
// expires the key itself at the entry's Expires (PX, rounded up to the
// millisecond); the cache still decides expiry from Written, exactly as
// Postfix does, so a key Redis still holds a little past written + timeout
// is a miss all the same.
//
// During a seal key rotation (several seal keys) a lookup asks for the
// id's name under every key in one pipelined round trip, the sealing key's
// first; the first value that opens wins. One round trip, not a second
// GET only on a miss: during a rotation nearly every new session misses
// first, so sequential lookups would double the latency of most misses for
// a whole cache timeout, and two calls cannot share one deadline as
// simply. Updates write only the sealing key's name; deletes remove every
// name.
//
// # The local copies
//
// Every update also goes to a bounded in-memory cache (memstore, with the
// configured *_max_entries and *_max_bytes), and every delete to both.
// What the store knows about each id's local copy is kept in a slot, by
// the id's first Redis key, bounded too. Three rules decide when a copy
// answers instead of Redis:
//
//   - Trusted, while Redis is up: a copy equal to what Redis held at a
//     moment after which the tracker (redisconn.Track, CLIENT TRACKING in
//     broadcasting mode) has reported no change to the key, while the
//     tracker's proof of liveness is fresh. So a delete or update through
//     another member is seen as soon as its invalidation arrives, and at
//     worst, if the tracking connections are cut or black-holed, a second
//     later (trackFresh). A lookup that Redis answers makes a trusted copy
//     only if no change to the key arrived while Redis answered.
//   - Clean, while Redis fails (an error, the deadline, the breaker open):
//     a copy that was the fleet's value or this member's own acknowledged
//     write, and of whose key no invalidation has arrived since. A delete
//     or replacement the member saw while connected therefore never comes
//     back from the local copy in an outage: any invalidation spoils the
//     copy for good, until Redis is read again or the member writes the
//     id itself. Changes made while tracking was off go unreported, so
//     when a new tracking session starts the clean copies are proved
//     against Redis again, and those it no longer holds are spoilt
//     (revalidate).
//   - Own, always: a member never reads back a value older than one it
//     acknowledged. While its update or delete is queued or on its way,
//     lookups of the id are answered locally. Once Redis has answered it,
//     the writer proves that Redis holds it (a fence through the tracker,
//     then a GET; the copy is then trusted and clean), or, if more writes
//     wait or the proof failed, revalidate does a moment later. If Redis refused
//     it (OOM), never got it (the breaker, a full queue) or did not say
//     (a timeout: it may still land later, even after a later write of
//     the same id), lookups that Redis answers are checked against it:
//     a value this member wrote earlier (known by its GCM tag) or a value
//     Redis held before the acknowledgement is older, and the own copy
//     answers; only a change the tracker reported after a fence taken
//     past the acknowledgement (Mark, Passed) makes Redis's value the
//     newer one again. Where the order cannot be known the answer is the
//     own copy, never an older value. The outage's updates are not
//     replayed when Redis is back (they may be stale by then, and a replay
//     storm is what a recovering Redis needs least): the other members do
//     not see them, this one does.
//
// A cluster has no tracker: nothing is trusted (every lookup asks Redis),
// no invalidation is ever seen, and in an outage the clean copies are the
// member's own writes.
//
// # Writes behind
//
// Updates and deletes reach Redis through one queue, in order, sent in
// pipelines by one writer goroutine under redisconn's deadline: an update
// is acknowledged once it is in the local cache and the queue, so smtpd
// never waits on Redis for an update, and a burst becomes a few round
// trips. Another member sees it when its pipeline has been sent, well
// under a millisecond later on a LAN. A delete waits for its turn, within
// the request's deadline, so that it can say whether Redis had the entry.
// The queue is bounded: an update that finds it full waits for room, as
// long as the request's deadline and the Redis timeout allow. An update
// or delete that is not shared (no room in time, Redis refused it or did
// not answer, the breaker open) is counted and logged, at most one line
// per unsharedLogEvery with the count of the others, never silently lost.
//
// The local cache does not expire by itself, so Store's Expire is for
// it: the cache's sweeper removes expired local entries
// on the memory store's schedule and mixes them into the PRNG pool, as it
// would for a memory cache. Redis entries are never swept.
//
// No Redis failure is an error to the caller: a lookup becomes a local hit
// or a miss, an update or delete is done locally and counted. Every call
// carries redisconn's deadline under the request's own.
package redisstore

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/redis/go-redis/v9"
)

// writtenLen is the length of the Written field in front of the session.
const writtenLen = 8

// Written times that Unix nanoseconds in an int64 represent.
var (
	minWritten = time.Unix(0, -1<<63)
	maxWritten = time.Unix(0, 1<<63-1)
)

// errNotUsed marks a Redis call that was not made because the request's
// context was already done: Redis was never asked, so the breaker must not
// count it as Redis's failure.
var errNotUsed = errors.New("redisstore: request context done before the Redis call")

// Store is an scache.Store on Redis with a bounded local cache. It does
// not own the client or the sealer: the caller closes them after Close.
type Store struct {
	c         *redisconn.Client
	rdb       redis.UniversalClient
	sealer    *seal.Sealer
	keyPrefix string // key_prefix + "c:" + cache name + ":"
	cacheName string
	lim       atomic.Pointer[scache.Limits] // of the local part; changed by SetLimits
	local     *memstore.Store
	log       *slog.Logger

	tracker *redisconn.Tracker // nil for a cluster
	tmu     sync.Mutex
	slots   map[string]*slot // by the id's first Redis key
	byAge   list.List        // of *slot, least recently written or read first
	// stripes count the changes seen (invalidations, and this member's
	// own writes) per hash of the key, so that a lookup whose key changed
	// while Redis answered does not trust the answer.
	stripes [trustStripes]uint64
	ownSeq  uint64 // numbers this member's writes, in order
	// unproved are the keys of own updates that landed and that the
	// writer did not prove Redis holds: revalidate does.
	unproved map[string]struct{}
	// inFlight counts own writes queued or on their way to Redis.
	inFlight atomic.Int64

	wmu     sync.RWMutex // held to send to writes, and to close it
	closed  bool
	writes  chan write
	written chan struct{} // closed when the writer is done

	hits, misses, unopenable         atomic.Uint64
	localHits, localMisses           atomic.Uint64
	fallbackHits, fallbackMisses     atomic.Uint64
	updatesUnshared, deletesUnshared atomic.Uint64
	queueFull                        atomic.Bool
	// replyFailing is set, per kind of call, while Redis refuses it with
	// an error reply (OOM at maxmemory, an ACL): the breaker does not
	// count those as outages, so the store logs their transitions itself.
	replyFailing [nOps]atomic.Bool

	// unsharedLog limits the warnings about unshared updates and
	// deletes (unsharedLogEvery).
	unsharedLog maillog.Cause

	// afterRead, if set (tests), runs between Redis's answer to a lookup
	// and the decision to trust it.
	afterRead func(key string)

	stopRevalidate context.CancelFunc
	revalidated    chan struct{} // closed when revalidate is done
}

// tag identifies one sealed value: its GCM tag, which the random nonce
// makes unique to each seal.
type tag [16]byte

func tagOf(v []byte) (t tag) {
	if len(v) >= len(t) {
		copy(t[:], v[len(v)-len(t):])
	}
	return t
}

// fate is what became of a write sent to Redis.
type fate uint8

const (
	inFlight fate = iota // queued, or sent and not yet answered
	landed               // Redis applied it
	lost                 // Redis refused it (an error reply) or never got it
	unknown              // no answer in time: Redis may apply it still, later
)

// ownWrite is one update or delete this member acknowledged.
type ownWrite struct {
	seq     uint64
	deleted bool // a delete (or an update with nothing valid to share)
	tag     tag  // of the sealed value, for an update sent
	fate    fate
	// mark is the tracker's fence mark at the acknowledgement: an
	// invalidation that arrives once it has passed is for a change made
	// after this write was acknowledged (newer).
	mark  uint64
	newer bool
	// settled: Redis was seen holding this write, or something newer.
	settled bool
}

// slot is what the store knows of one id's local copy.
type slot struct {
	key, id string
	elem    *list.Element // in byAge
	pending int           // own writes queued or on their way
	// trusted: the local copy equals Redis's value as of tracker state
	// trustGen (see the package comment).
	trusted  bool
	trustGen uint64
	// clean: no invalidation of the key has arrived since the local copy
	// was the fleet's value or an own write; cleanEpoch is the tracking
	// epoch in which that was last proved (see revalidate).
	clean      bool
	cleanEpoch uint64
	tag        tag       // of the local copy's value in Redis, if it has one
	own        *ownWrite // the latest own write, if any
	// stale are earlier own writes that Redis may hold or still get.
	// Beyond maxStale they are not kept: forgotten is the number of the
	// latest one dropped while on its way, and staleFull says that one
	// dropped may still land (Redis did not answer it), so that a value
	// Redis holds other than the latest own write may be an older own one.
	stale     []*ownWrite
	forgotten uint64
	staleFull bool
}

// maxStale bounds the earlier own writes remembered per id (see
// slot.staleFull for what is known of the others).
const maxStale = 8

const trustStripes = 64

// The write queue: its bound, and the most writes one pipeline carries.
const (
	writeQueue = 1024
	writeBatch = 64
)

// verifyFence bounds the writer's wait for the tracker's fence before it
// checks that Redis holds what it wrote: the tracker's heartbeat gives up
// on a connection after trackPongTimeout, a second, and Fence returns then.
const verifyFence = time.Second

// unsharedLogEvery spaces the reports of unshared updates and deletes.
const unsharedLogEvery = 10 * time.Second

// revalidateEvery is how often revalidate looks for a new tracking
// session, and revalidateBatch how many copies one of its pipelines
// proves.
const (
	revalidateEvery = 250 * time.Millisecond
	revalidateBatch = 500
)

// write is one update (val set) or delete (keys) on its way to Redis; a
// write with neither is a Sync's marker. done, if set, receives whether
// the delete found anything, or the error.
type write struct {
	key  string // the first Redis key: the slot's
	seq  uint64 // the own write's
	val  []byte
	ttl  time.Duration
	keys []string
	done chan deleted
}

func (w write) marker() bool { return w.key == "" }

type deleted struct {
	found bool
	err   error
}

// outcome is what Redis made of one write of a pipeline.
type outcome struct {
	fate  fate
	found bool
	err   error
}

// Kinds of calls, for the log: under OOM lookups and deletes still work
// while updates fail.
type op int

const (
	opLookup op = iota
	opUpdate
	opDelete
	nOps
)

var opNames = [nOps]string{"lookups", "updates", "deletes"}

// opFallbacks says what becomes of a call Redis refuses.
var opFallbacks = [nOps]string{"serving from the local cache", "kept in the local cache only", "done in the local cache only"}

var (
	_ scache.Store            = (*Store)(nil)
	_ scache.MetricsCollector = (*Store)(nil)
	_ scache.Clearer          = (*Store)(nil)
)

// New returns the store of cache cacheName ("smtpd", "smtp", "lmtp") on
// client, sealing with sealer, its Redis keys under prefix (the settings'
// key_prefix), its local part bounded by lim. log may be nil.
func New(client *redisconn.Client, sealer *seal.Sealer, prefix, cacheName string, lim scache.Limits, log *slog.Logger) (*Store, error) {
	switch {
	case client == nil:
		return nil, errors.New("redisstore: no Redis client")
	case sealer == nil:
		return nil, errors.New("redisstore: no sealer")
	case !isToken(cacheName):
		return nil, fmt.Errorf("redisstore: cache name %q is not a token (printable characters, no white space, commas or colons)", cacheName)
	case lim.MaxEntries <= 0 || lim.MaxBytes <= 0:
		return nil, fmt.Errorf("redisstore: limits %+v must both be positive", lim)
	}
	s := &Store{
		c:         client,
		rdb:       client.Redis(),
		sealer:    sealer,
		keyPrefix: prefix + "c:" + cacheName + ":",
		cacheName: cacheName,
		local:     memstore.New(lim),
		log:       maillog.OrDiscard(log),
		slots:     make(map[string]*slot),
		unproved:  make(map[string]struct{}),
		writes:    make(chan write, writeQueue),
		written:   make(chan struct{}),
	}
	s.unsharedLog = maillog.Cause{
		Key:   "unshared " + s.keyPrefix,
		Every: unsharedLogEvery,
		Note:  "; %d more not shared since the last report",
	}
	s.lim.Store(&lim)
	s.tracker = client.Track(s.keyPrefix, s.invalidated)
	go s.writer()
	var rctx context.Context
	rctx, s.stopRevalidate = context.WithCancel(context.Background())
	s.revalidated = make(chan struct{})
	go s.revalidate(rctx)
	return s, nil
}

// maxSlots bounds the slots: twice the local entries, so that the local
// cache's own evictions (oldest written first) rather than the slots'
// (least recently used) decide which copies go.
func maxSlots(lim scache.Limits) int { return 2 * lim.MaxEntries }

// SetLimits bounds the local part by lim from now on: a
// smaller bound evicts its oldest-written entries at once, and forgets
// slots beyond it. Redis's entries are not touched: Redis expires them
// itself.
func (s *Store) SetLimits(ctx context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("redisstore: limits %+v must both be positive", lim)
	}
	s.lim.Store(&lim)
	if err := s.local.SetLimits(ctx, lim); err != nil {
		return err
	}
	s.tmu.Lock()
	for len(s.slots) > maxSlots(lim) && s.evictSlot() {
	}
	s.tmu.Unlock()
	return nil
}

// isToken accepts printable ASCII without white space, commas or colons:
// the colon separates the cache name from the name in a key.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ',' || c == ':' {
			return false
		}
	}
	return s != ""
}

// keys are id's Redis keys, the sealing key's first.
func (s *Store) keys(id string) []string {
	names := s.sealer.Names(id)
	for i, n := range names {
		names[i] = s.keyPrefix + n
	}
	return names
}

func (s *Store) writeKey(id string) string { return s.keyPrefix + s.sealer.Name(id) }

// slotFor returns key's slot, made if need be; s.tmu is held.
func (s *Store) slotFor(key, id string) *slot {
	if sl := s.slots[key]; sl != nil {
		s.byAge.MoveToBack(sl.elem)
		return sl
	}
	if len(s.slots) >= maxSlots(*s.lim.Load()) {
		s.evictSlot()
	}
	sl := &slot{key: key, id: id}
	sl.elem = s.byAge.PushBack(sl)
	s.slots[key] = sl
	return sl
}

// evictScan is how many of the least recently used slots evictSlot
// considers.
const evictScan = 64

// evictSlot forgets one slot without a write on its way, preferring among
// the least recently used one whose local copy the local cache has
// evicted already (it has twice as many slots as entries, so there is
// one) and that remembers no own write, then one without a local copy;
// s.tmu is held. A local copy that loses its slot is answered no more and
// goes with the local cache's own evictions.
func (s *Store) evictSlot() bool {
	var best *slot
	bestRank := 3
	n := 0
	for e := s.byAge.Front(); e != nil && n < evictScan && bestRank > 0; e = e.Next() {
		sl := e.Value.(*slot)
		if sl.pending > 0 {
			continue
		}
		n++
		rank := 2
		if !s.hasLocal(sl.id) {
			rank = 1
			if (sl.own == nil || sl.own.settled) && len(sl.stale) == 0 && !sl.staleFull {
				rank = 0
			}
		}
		if rank < bestRank {
			best, bestRank = sl, rank
		}
	}
	if best == nil {
		return false
	}
	s.byAge.Remove(best.elem)
	delete(s.slots, best.key)
	return true
}

func (s *Store) hasLocal(id string) bool {
	e, err := s.local.Get(context.Background(), id)
	clear(e.Session)
	return err == nil
}

// Get returns the entry from a local copy that may answer (see the
// package comment), from Redis, or from a clean local copy when Redis
// fails. It fails only with scache.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (scache.Entry, error) {
	keys := s.keys(id)
	key := keys[0]
	// With the breaker open, straight to the local cache: no command to
	// build.
	if !s.c.Refusing() {
		if e, ok, err := s.localAnswer(ctx, key, id); ok {
			return s.countLocal(e, err)
		}
		mark := s.beforeRead(key)
		rr, err := s.getRedis(ctx, keys)
		if err == nil {
			if s.afterRead != nil {
				s.afterRead(key)
			}
			e, err, local := s.settle(ctx, key, id, mark, rr)
			if local {
				return s.countLocal(e, err)
			}
			if err != nil {
				s.misses.Add(1)
				return scache.Entry{}, err
			}
			s.hits.Add(1)
			return e, nil
		}
	}
	return s.fallback(ctx, key, id)
}

func (s *Store) countLocal(e scache.Entry, err error) (scache.Entry, error) {
	if err != nil {
		s.misses.Add(1)
		s.localMisses.Add(1)
		return scache.Entry{}, scache.ErrNotFound
	}
	s.hits.Add(1)
	s.localHits.Add(1)
	return e, nil
}

// localAnswer answers a lookup of id locally (ok) while an own write of
// it is on its way to Redis, with the entry or a miss; or with a trusted
// copy.
func (s *Store) localAnswer(ctx context.Context, key, id string) (e scache.Entry, ok bool, err error) {
	gen, on := s.tracker.State()
	s.tmu.Lock()
	sl := s.slots[key]
	if sl == nil || sl.id != id {
		s.tmu.Unlock()
		return scache.Entry{}, false, nil
	}
	pending := sl.pending > 0
	trusted := on && sl.trusted && sl.trustGen == gen
	s.tmu.Unlock()
	if !pending && !trusted {
		return scache.Entry{}, false, nil
	}
	e, err = s.local.Get(ctx, id)
	if err != nil && !pending {
		// Evicted from the bounded local cache.
		s.tmu.Lock()
		if s.slots[key] == sl {
			sl.trusted, sl.clean = false, false
		}
		s.tmu.Unlock()
		return scache.Entry{}, false, nil
	}
	return e, true, err
}

// fallback answers a lookup Redis failed: from a clean local copy, or one
// an own write of is on its way.
func (s *Store) fallback(ctx context.Context, key, id string) (scache.Entry, error) {
	s.tmu.Lock()
	sl := s.slots[key]
	ok := sl != nil && sl.id == id && (sl.pending > 0 || sl.clean)
	s.tmu.Unlock()
	if ok {
		if e, err := s.local.Get(ctx, id); err == nil {
			s.fallbackHits.Add(1)
			return e, nil
		}
	}
	s.fallbackMisses.Add(1)
	return scache.Entry{}, scache.ErrNotFound
}

// readMark is what settle compares after Redis has answered: the
// tracker's state and the key's stripe.
type readMark struct {
	gen uint64
	seq uint64
}

func (s *Store) beforeRead(key string) readMark {
	gen, _ := s.tracker.State()
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return readMark{gen: gen, seq: s.stripes[stripe(key)]}
}

// tracking reports whether gen, a tracker state, has a session on. A copy
// may be made trusted while one is: it is served only while the
// tracker's proof is fresh (State), and the session's invalidations
// spoil it as they arrive.
func tracking(gen uint64) bool { return gen&1 == 1 }

// readResult is Redis's answer to a lookup.
type readResult struct {
	e       scache.Entry
	found   bool // e is the answer
	first   bool // ... read under the first key
	present bool // the first key holds a value, whether it opens or not
	tag     tag  // ... its tag
}

// settle decides between Redis's answer rr and the local copy (local),
// and keeps rr as a trusted copy when it may: unless tracking changed,
// or a change to a key of the same stripe arrived (or an own write
// began) while Redis answered, the answer might be older than that.
func (s *Store) settle(ctx context.Context, key, id string, m readMark, rr readResult) (e scache.Entry, err error, local bool) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	sl := s.slots[key]
	if sl != nil && sl.id != id {
		sl = nil
	}
	if sl != nil {
		switch o := sl.own; {
		case sl.pending > 0:
			// An own write began while Redis answered: it is newer.
			local = true
		case rr.present && sl.isStale(rr.tag):
			// Redis holds an earlier own value: one that landed late,
			// or the last to land before a later one failed.
			local = true
		case rr.present && sl.mayBeStale(rr.tag):
			if o != nil && o.newer {
				// A change came after the latest own write, and Redis's
				// value is that change or a forgotten own write that
				// landed late: neither the own copy (maybe replaced)
				// nor Redis's value (maybe older) may answer.
				sl.trusted, sl.clean = false, false
				return scache.Entry{}, scache.ErrNotFound, false
			}
			// Nothing reported since the latest own write: whatever
			// Redis holds is not newer.
			local = true
		case o != nil && !o.settled:
			ours := o.tag != (tag{}) && rr.present && rr.tag == o.tag || o.deleted && !rr.present && !rr.found
			if ours || o.fate == landed || o.newer {
				// Redis holds it, or what Redis holds came after it.
				o.settled = true
			} else {
				// Refused, never sent or unanswered, and nothing
				// reported since: what Redis holds may be older.
				local = true
			}
		}
	}
	if local {
		e, err := s.local.Get(ctx, id)
		return e, err, true
	}
	if !rr.found || !rr.first {
		if sl != nil {
			// Redis holds no value of the first key's: the local copy
			// is not the fleet's.
			sl.trusted, sl.clean = false, false
		}
		if !rr.found {
			return scache.Entry{}, scache.ErrNotFound, false
		}
		return rr.e, nil, false
	}
	if gen, _ := s.tracker.State(); !tracking(gen) || gen != m.gen || s.stripes[stripe(key)] != m.seq {
		if sl != nil {
			sl.trusted = false
		}
		return rr.e, nil, false
	}
	if s.local.Put(ctx, id, rr.e) != nil {
		return rr.e, nil, false
	}
	sl = s.slotFor(key, id)
	sl.trusted, sl.trustGen = true, m.gen
	sl.clean, sl.cleanEpoch, sl.tag = true, s.tracker.Epoch(), rr.tag
	return rr.e, nil, false
}

// isStale reports whether t is the tag of an earlier own write.
func (sl *slot) isStale(t tag) bool {
	if t == (tag{}) {
		return false
	}
	for _, o := range sl.stale {
		if o.tag == t {
			return true
		}
	}
	return false
}

// mayBeStale reports whether t, of no remembered own write, may be that
// of a forgotten one that Redis did not answer.
func (sl *slot) mayBeStale(t tag) bool {
	return t != (tag{}) && sl.staleFull && (sl.own == nil || sl.own.tag != t)
}

// invalidated is the tracker's report: keys changed in Redis, or (nil)
// every key did.
func (s *Store) invalidated(keys []string) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if keys == nil {
		for i := range s.stripes {
			s.stripes[i]++
		}
		for _, sl := range s.slots {
			s.spoil(sl)
		}
		return
	}
	for _, k := range keys {
		s.stripes[stripe(k)]++
		if sl := s.slots[k]; sl != nil {
			s.spoil(sl)
		}
	}
}

// spoil records that Redis reported a change to sl's key: the copy is
// neither trusted nor clean any more (the change may be a delete or a
// replacement by another member), and an own write acknowledged before
// the tracker's fence mark has a newer value in Redis; s.tmu is held.
func (s *Store) spoil(sl *slot) {
	sl.trusted, sl.clean = false, false
	if o := sl.own; o != nil && !o.newer && s.tracker.Passed(o.mark) {
		o.newer = true
	}
}

// changed forgets the trusted copies of keys, and makes lookups of them
// under way distrust their answers; s.tmu is held.
func (s *Store) changed(keys []string) {
	for _, k := range keys {
		s.stripes[stripe(k)]++
		if sl := s.slots[k]; sl != nil {
			sl.trusted = false
		}
	}
}

// stripe is FNV-1a of key, folded.
func stripe(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % trustStripes)
}

// getRedis returns what Redis holds under keys: the first entry that
// opens, or none; an error only when Redis failed.
func (s *Store) getRedis(ctx context.Context, keys []string) (readResult, error) {
	if ctx.Err() != nil {
		return readResult{}, errNotUsed
	}
	rctx, cancel := s.c.WithTimeout(ctx)
	defer cancel()
	var rr readResult
	if len(keys) == 1 {
		v, err := s.rdb.Get(rctx, keys[0]).Bytes()
		if err != nil {
			return readResult{}, s.redisErr(opLookup, err)
		}
		s.replyOK(opLookup)
		rr.present, rr.tag = true, tagOf(v)
		rr.e, rr.found = s.open(keys[0], v)
		rr.first = rr.found
		return rr, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Get(rctx, k)
	}
	_, _ = pipe.Exec(rctx) // each command carries its own result
	// In order: an answer after a failed command could be an older
	// version of an entry the failed one holds.
	for i, cmd := range cmds {
		v, err := cmd.Bytes()
		if err != nil {
			if errors.Is(err, redis.Nil) {
				continue
			}
			return readResult{}, s.redisErr(opLookup, err)
		}
		if i == 0 {
			rr.present, rr.tag = true, tagOf(v)
		}
		if e, ok := s.open(keys[i], v); ok {
			s.replyOK(opLookup)
			rr.e, rr.found, rr.first = e, true, i == 0
			return rr, nil
		}
	}
	s.replyOK(opLookup)
	return rr, nil
}

// redisErr passes a miss on as nil and notes error replies.
func (s *Store) redisErr(o op, err error) error {
	if errors.Is(err, redis.Nil) {
		s.replyOK(o)
		return nil
	}
	s.noteReply(o, err)
	return err
}

// open returns the entry sealed in v under key. A value that does not
// open is counted and is a miss: whatever it is (tampered, moved, damaged,
// another format), no member can use it.
func (s *Store) open(key string, v []byte) (scache.Entry, bool) {
	p, err := s.sealer.Open([]byte(key), v)
	if err == nil && len(p) < writtenLen {
		clear(p)
		err = errors.New("opened value too short")
	}
	if err != nil {
		s.unopenable.Add(1)
		maillog.Warnf(s.log, "Redis %s session cache: a value failed to open (%v); treated as a miss", s.cacheName, err)
		return scache.Entry{}, false
	}
	// The session stays in the opened buffer, handed to the caller: no
	// second copy of it is made, so none is left to wipe.
	return scache.Entry{
		Written: time.Unix(0, int64(binary.BigEndian.Uint64(p[:writtenLen]))),
		Session: p[writtenLen:],
	}, true
}

// ownWrite records w, which this member is acknowledging, as the latest
// own write of its key and returns its number; shared says whether it
// goes to the writer. s.tmu is held.
func (s *Store) ownWrite(id string, w write, shared bool) uint64 {
	sl := s.slotFor(w.key, id)
	if w.val != nil {
		s.changed([]string{w.key})
	} else {
		s.changed(w.keys)
	}
	if o := sl.own; o != nil && o.tag != (tag{}) && o.fate != lost {
		sl.addStale(o)
	}
	s.ownSeq++
	o := &ownWrite{seq: s.ownSeq, deleted: w.val == nil, tag: tagOf(w.val), fate: inFlight, mark: s.tracker.Mark()}
	if !shared {
		o.fate = lost
	}
	sl.own = o
	// The member's own value: what an outage serves, until a change
	// is reported.
	sl.clean, sl.cleanEpoch, sl.tag = true, s.tracker.Epoch(), o.tag
	if shared {
		sl.pending++
		s.inFlight.Add(1)
	}
	return o.seq
}

func (sl *slot) addStale(o *ownWrite) {
	switch {
	case len(sl.stale) < maxStale:
		sl.stale = append(sl.stale, o)
	case o.fate == unknown:
		sl.forgotten, sl.staleFull = max(sl.forgotten, o.seq), true
	default:
		// On its way or landed: forgotten for now. Only if a write of
		// the id fails may Redis keep (or get late) such a value: see
		// report. A burst that all lands leaves nothing in doubt.
		sl.forgotten = max(sl.forgotten, o.seq)
	}
}

// report records the fate of own write seq and forgets the earlier own
// writes that can no longer be what Redis holds: refused ones, and landed
// ones older than a later landed one.
func (sl *slot) report(seq uint64, f fate) {
	if o := sl.own; o != nil && o.seq == seq {
		o.fate = f
	}
	if f != landed && sl.forgotten != 0 {
		// A forgotten write failed, and may land late; or a later one
		// failed, and Redis may keep a forgotten one that landed.
		sl.staleFull = true
	}
	var lastLanded uint64
	for _, o := range sl.stale {
		if o.seq == seq {
			o.fate = f
		}
		if o.fate == landed {
			lastLanded = max(lastLanded, o.seq)
		}
	}
	if o := sl.own; o != nil && o.fate == landed {
		lastLanded = max(lastLanded, o.seq)
	}
	kept := sl.stale[:0]
	for _, o := range sl.stale {
		if o.fate == lost || o.fate == landed && o.seq < lastLanded {
			continue
		}
		kept = append(kept, o)
	}
	clear(sl.stale[len(kept):])
	sl.stale = kept
}

// Put stores the entry in the local cache and queues it for Redis, to
// expire at e.Expires. It fails only with scache.ErrTooLarge, and then
// stores nothing.
func (s *Store) Put(ctx context.Context, id string, e scache.Entry) error {
	if scache.Size(id, e.Session) > s.lim.Load().MaxBytes {
		return scache.ErrTooLarge
	}
	keys := s.keys(id)
	w := write{key: keys[0]}
	// A request out of time does not even queue its write.
	why := ""
	switch {
	case ctx.Err() != nil:
		why = "the request's deadline had passed"
	case s.c.Refusing():
		why = "Redis unavailable, the circuit breaker is open"
	}
	ttl, ok := redisTTL(e.Expires, time.Now())
	switch {
	case !ok || e.Written.Before(minWritten) || e.Written.After(maxWritten):
		// Nothing valid to share; an older version in Redis must not
		// outlive the replacement.
		w.keys = keys
	case why == "":
		p := make([]byte, writtenLen+len(e.Session))
		binary.BigEndian.PutUint64(p, uint64(e.Written.UnixNano()))
		copy(p[writtenLen:], e.Session)
		w.val, w.ttl = s.sealer.Seal([]byte(keys[0]), p), ttl
		clear(p)
	default:
		w.val = []byte{} // an update, not sent
	}
	// Recorded before the local copy changes: a lookup under way then
	// cannot put Redis's older answer in its place.
	s.tmu.Lock()
	w.seq = s.ownWrite(id, w, why == "")
	s.tmu.Unlock()
	if err := s.local.Put(ctx, id, e); err != nil {
		if why == "" {
			s.drop(w)
		}
		return err
	}
	if why == "" {
		if why = s.enqueue(ctx, w, false); why != "" {
			s.drop(w)
		}
	}
	if why != "" {
		s.updatesUnshared.Add(1)
		s.unshared("an update", why)
	}
	return nil
}

// unshared logs an update or delete that the fleet does not get: the
// first at once, then at most one per unsharedLogEvery, which ends with
// the count of the others. A line of its own about the cause (Redis
// refusing updates, the queue full) counts as the report (Cause.Coverf).
func (s *Store) unshared(what, why string) {
	s.unsharedLog.Warnf(s.log, "Redis %s session cache: %s not shared with the fleet (%s); kept in the local cache only", s.cacheName, what, why)
}

// enqueue hands w to the writer, waiting for room until ctx is done; it
// returns why it could not, or "". An update (!wait) waits at most the
// Redis timeout as well: a queue that stays full that long means Redis
// cannot keep up, and the update is then refused at once. Deletes and
// Sync wait for their answer anyway. A closed store refuses everything.
func (s *Store) enqueue(ctx context.Context, w write, wait bool) string {
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	if s.closed {
		return "the store is closed"
	}
	select {
	case s.writes <- w:
		return ""
	default:
	}
	var expire <-chan time.Time
	if !wait {
		t := time.NewTimer(s.c.Timeout())
		defer t.Stop()
		expire = t.C
	}
	select {
	case s.writes <- w:
		if s.queueFull.Load() && s.queueFull.CompareAndSwap(true, false) {
			maillog.Infof(s.log, "Redis %s session cache: the write queue has room again", s.cacheName)
		}
		return ""
	case <-ctx.Done():
	case <-expire:
	}
	if !wait && s.queueFull.CompareAndSwap(false, true) {
		s.unsharedLog.Coverf(s.log, "Redis %s session cache: %d writes are waiting for Redis; updates that find no room are kept in the local cache only", s.cacheName, writeQueue)
	}
	return "the write queue is full"
}

// writer sends the queued writes in order, in pipelines of what has
// accumulated while the previous one was out.
func (s *Store) writer() {
	defer close(s.written)
	batch := make([]write, 0, writeBatch)
	for w := range s.writes {
		batch = append(batch[:0], w)
	more:
		for len(batch) < writeBatch {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break more
				}
				batch = append(batch, w)
			default:
				break more
			}
		}
		out := s.send(batch)
		s.record(batch, out)
		// Deletes have their answer now: a request waits for it.
		for i, w := range batch {
			if w.done != nil && !w.marker() {
				w.done <- deleted{found: out[i].found, err: out[i].err}
			}
		}
		// Sharing what waits comes first: a burst's own copies are
		// proved by revalidate (until then an outage does not serve
		// those whose own invalidations arrived).
		if len(s.writes) == 0 {
			s.verify(batch, out)
		}
		s.done(batch, out)
		clear(batch)
		// The queue has drained: say so even if no update waited for
		// room, so that the next time it fills is reported again.
		if len(s.writes) == 0 && s.queueFull.Load() && s.queueFull.CompareAndSwap(true, false) {
			maillog.Infof(s.log, "Redis %s session cache: the write queue has room again", s.cacheName)
		}
	}
}

// send writes batch to Redis in one round trip under one deadline.
func (s *Store) send(batch []write) []outcome {
	out := make([]outcome, len(batch))
	ctx, cancel := s.c.WithTimeout(context.Background())
	defer cancel()
	if len(batch) == 1 && batch[0].val != nil {
		w := batch[0]
		err := s.rdb.Set(ctx, w.key, w.val, w.ttl).Err()
		out[0] = outcome{fate: fateOf(err), err: err}
		return out
	}
	pipe := s.rdb.Pipeline()
	sets := make([]*redis.StatusCmd, len(batch))
	dels := make([][]*redis.IntCmd, len(batch))
	for i, w := range batch {
		if w.val != nil {
			sets[i] = pipe.Set(ctx, w.key, w.val, w.ttl)
			continue
		}
		// Several names go as single-key DELs: in a Cluster the names
		// of one id are in different slots, where a multi-key DEL fails
		// with CROSSSLOT.
		for _, k := range w.keys {
			dels[i] = append(dels[i], pipe.Del(ctx, k))
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command carries its own result
	}
	for i, w := range batch {
		if w.val != nil {
			err := sets[i].Err()
			out[i] = outcome{fate: fateOf(err), err: err}
			continue
		}
		o := outcome{fate: landed}
		for _, cmd := range dels[i] {
			n, err := cmd.Result()
			if err != nil {
				// Some names may be gone, others not: the delete
				// did not reach the fleet, and may have in part.
				o = outcome{fate: unknown, err: err}
				break
			}
			o.found = o.found || n > 0
		}
		out[i] = o
	}
	return out
}

// fateOf classifies a write's result: an error reply (OOM, an ACL) or the
// breaker's refusal was not applied; a timeout or a broken connection may
// have been, or may be later.
func fateOf(err error) fate {
	var rerr redis.Error
	switch {
	case err == nil:
		return landed
	case errors.Is(err, redisconn.ErrUnavailable) || errors.As(err, &rerr) && !errors.Is(err, redis.Nil):
		return lost
	}
	return unknown
}

// record notes what became of each write, counts and logs the ones the
// fleet did not get.
func (s *Store) record(batch []write, out []outcome) {
	s.tmu.Lock()
	for i, w := range batch {
		if sl := s.slots[w.key]; sl != nil && !w.marker() {
			sl.report(w.seq, out[i].fate)
			// Bounded: with tracking off for long, lookups decide.
			if w.val != nil && out[i].fate == landed && sl.own != nil && sl.own.seq == w.seq &&
				s.tracker != nil && len(s.unproved) < maxSlots(*s.lim.Load()) {
				s.unproved[w.key] = struct{}{}
			}
		}
	}
	s.tmu.Unlock()
	for i, w := range batch {
		if w.marker() {
			continue
		}
		o, err := opUpdate, out[i].err
		if w.done != nil {
			o = opDelete
		}
		if err == nil {
			s.replyOK(o)
			continue
		}
		said := s.noteReply(o, err)
		if o == opDelete {
			s.deletesUnshared.Add(1)
			if !said {
				s.unshared("a delete", err.Error())
			}
		} else {
			s.updatesUnshared.Add(1)
			if !said {
				s.unshared("an update", err.Error())
			}
		}
	}
}

// verify makes the batch's landed updates trusted and clean copies once
// it has seen Redis hold them (when no more writes wait): after a fence through the tracker (every
// invalidation of a change made before it, this write's own included, has
// arrived), a GET of each key with no invalidation of it on the way.
// Without that proof an own update's own invalidation leaves its copy
// unclean, and an outage does not serve it.
func (s *Store) verify(batch []write, out []outcome) {
	if gen, _ := s.tracker.State(); !tracking(gen) {
		return
	}
	want := map[string]uint64{} // key -> the own write's number
	s.tmu.Lock()
	for i, w := range batch {
		if w.val == nil || out[i].fate != landed {
			continue
		}
		if sl := s.slots[w.key]; sl != nil && sl.own != nil && sl.own.seq == w.seq {
			want[w.key] = w.seq
		}
	}
	s.tmu.Unlock()
	if len(want) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.Background(), verifyFence)
	fenced := s.tracker.Fence(fctx)
	cancel()
	if !fenced {
		return
	}
	gen, _ := s.tracker.State()
	if !tracking(gen) {
		return
	}
	keys := make([]string, 0, len(want))
	marks := make([]uint64, 0, len(want))
	s.tmu.Lock()
	for k := range want {
		keys = append(keys, k)
		marks = append(marks, s.stripes[stripe(k)])
	}
	s.tmu.Unlock()
	rctx, rcancel := s.c.WithTimeout(context.Background())
	defer rcancel()
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		gets[i] = pipe.Get(rctx, k)
	}
	_, _ = pipe.Exec(rctx)
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if g, _ := s.tracker.State(); g != gen {
		return
	}
	epoch := s.tracker.Epoch()
	for i, k := range keys {
		v, err := gets[i].Bytes()
		sl := s.slots[k]
		if err != nil || sl == nil || sl.own == nil || sl.own.seq != want[k] || s.stripes[stripe(k)] != marks[i] || tagOf(v) != sl.own.tag {
			continue
		}
		sl.own.settled = true
		sl.trusted, sl.trustGen = true, gen
		sl.clean, sl.cleanEpoch = true, epoch
		delete(s.unproved, k)
	}
}

// revalidate runs while the store is open, every revalidateEvery. It
// proves again the own updates that landed but that the writer could not
// prove (the fence or the GET failed, or more writes were waiting), so
// that an outage serves them once their own invalidations arrived. And
// whenever a new tracking session has started, it proves again the clean
// copies of earlier sessions: Redis reported nothing of the changes made
// between two sessions (while it was unreachable, or answered while
// tracking was off), so a copy the last session left clean may have been
// deleted or replaced since. A copy whose value Redis still holds (by its
// tag; or, for an own update Redis refused or has not answered, an older
// own value or, if refused, none) is clean in the new epoch; any other is
// spoilt. Until that is done, an outage may still serve the old copies:
// changes during the gap went unseen.
func (s *Store) revalidate(ctx context.Context) {
	defer close(s.revalidated)
	if s.tracker == nil {
		return
	}
	tick := time.NewTicker(revalidateEvery)
	defer tick.Stop()
	var done uint64 // the epoch whose copies are all proved
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		gen, _ := s.tracker.State()
		if !tracking(gen) {
			continue
		}
		s.proveOwn(ctx, gen)
		if epoch := s.tracker.Epoch(); epoch != done && s.revalidateEpoch(ctx, gen, epoch) {
			done = epoch
		}
	}
}

// proof is what Redis held under one key at a moment after which every
// change was reported (ok: none was, before the answer).
type proof struct {
	present bool
	tag     tag
	ok      bool
}

// prove asks Redis for keys after a fence, in session gen; false if it
// could not (tracking changed, the fence or the pipeline failed). Nobody
// waits on it: a scan batch's patience.
func (s *Store) prove(ctx context.Context, gen uint64, keys []string) ([]proof, bool) {
	fctx, cancel := context.WithTimeout(ctx, verifyFence)
	fenced := s.tracker.Fence(fctx)
	cancel()
	if g, _ := s.tracker.State(); !fenced || g != gen {
		return nil, false
	}
	marks := make([]uint64, len(keys))
	s.tmu.Lock()
	for i, k := range keys {
		marks[i] = s.stripes[stripe(k)]
	}
	s.tmu.Unlock()
	rctx, rcancel := context.WithTimeout(ctx, max(10*s.c.Timeout(), time.Second))
	defer rcancel()
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		gets[i] = pipe.Get(rctx, k)
	}
	_, _ = pipe.Exec(rctx)
	out := make([]proof, len(keys))
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if g, _ := s.tracker.State(); g != gen {
		return nil, false
	}
	for i, k := range keys {
		v, err := gets[i].Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, false
		}
		out[i] = proof{present: err == nil, tag: tagOf(v), ok: s.stripes[stripe(k)] == marks[i]}
	}
	return out, true
}

// proveOwn proves the landed own updates the writer did not.
func (s *Store) proveOwn(ctx context.Context, gen uint64) {
	var keys []string
	s.tmu.Lock()
	for k := range s.unproved {
		keys = append(keys, k)
		if len(keys) == revalidateBatch {
			break
		}
	}
	s.tmu.Unlock()
	if len(keys) == 0 {
		return
	}
	proofs, ok := s.prove(ctx, gen, keys)
	if !ok {
		return
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	epoch := s.tracker.Epoch()
	for i, k := range keys {
		sl, p := s.slots[k], proofs[i]
		if sl == nil || sl.own == nil || sl.own.settled || sl.own.fate != landed || sl.pending > 0 {
			delete(s.unproved, k) // settled or replaced meanwhile
			continue
		}
		if !p.ok {
			continue // a change came on the way: again, next time
		}
		delete(s.unproved, k)
		if p.present && p.tag == sl.own.tag {
			sl.own.settled = true
			sl.trusted, sl.trustGen = true, gen
			sl.clean, sl.cleanEpoch = true, epoch
		}
		// Otherwise Redis holds something else: lookups decide.
	}
}

// revalidateEpoch proves the copies clean in an epoch before epoch, in
// session gen; false if it could not finish.
func (s *Store) revalidateEpoch(ctx context.Context, gen, epoch uint64) bool {
	for {
		var keys []string
		s.tmu.Lock()
		for k, sl := range s.slots {
			if sl.clean && sl.cleanEpoch < epoch && sl.pending == 0 {
				keys = append(keys, k)
				if len(keys) == revalidateBatch {
					break
				}
			}
		}
		s.tmu.Unlock()
		if len(keys) == 0 {
			return true
		}
		proofs, ok := s.prove(ctx, gen, keys)
		if !ok {
			return false
		}
		s.tmu.Lock()
		for i, k := range keys {
			sl, p := s.slots[k], proofs[i]
			if sl == nil || !sl.clean || sl.cleanEpoch >= epoch || sl.pending > 0 || !p.ok {
				continue // changed meanwhile: that decides
			}
			o := sl.own
			unsent := o != nil && !o.settled && (o.fate == lost || o.fate == unknown)
			switch {
			case p.present && sl.tag != (tag{}) && p.tag == sl.tag,
				// An own update Redis never got, or may get late: what
				// Redis holds is older, or nothing.
				unsent && p.present && sl.isStale(p.tag),
				unsent && !p.present && o.fate == lost,
				o != nil && o.deleted && !p.present:
				sl.cleanEpoch = epoch
			default:
				// Not spoil: when the change was made is unknown, so it
				// does not make Redis's value newer than an own write.
				sl.trusted, sl.clean = false, false
			}
		}
		s.tmu.Unlock()
	}
}

// done ends the batch's writes: their lookups go to Redis again, and
// Syncs get their answers.
func (s *Store) done(batch []write, out []outcome) {
	s.tmu.Lock()
	for _, w := range batch {
		if w.marker() {
			continue
		}
		s.inFlight.Add(-1)
		if sl := s.slots[w.key]; sl != nil && sl.pending > 0 {
			sl.pending--
		}
	}
	s.tmu.Unlock()
	for i, w := range batch {
		if w.done != nil && w.marker() {
			w.done <- deleted{found: out[i].found, err: out[i].err}
		}
	}
}

// drop ends own write w, which never reached the writer.
func (s *Store) drop(w write) {
	s.inFlight.Add(-1)
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if sl := s.slots[w.key]; sl != nil {
		sl.report(w.seq, lost)
		if sl.pending > 0 {
			sl.pending--
		}
	}
}

// Sync waits until every write queued before the call has been sent to
// Redis (or failed), and every invalidation Redis sent this member before
// then has been applied; or until ctx is done. After a.Sync and b.Sync,
// b sees what a did before.
func (s *Store) Sync(ctx context.Context) error {
	done := make(chan deleted, 1)
	if why := s.enqueue(ctx, write{done: done}, true); why != "" {
		return errors.Join(fmt.Errorf("redisstore: %s", why), ctx.Err())
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.tracker.Sync(ctx)
}

// redisTTL is the lifetime to give Redis for an entry that expires at
// expires: rounded up to the millisecond (Redis's unit), so Redis never
// drops an entry the cache still counts as live; false when it has
// expired already.
func redisTTL(expires, now time.Time) (time.Duration, bool) {
	d := expires.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond), true
}

// Delete removes the entry from Redis (under every seal key's name) and
// from the local cache. It reports what Redis had while Redis answers
// within the request's deadline, what the local cache had when it does
// not, and never fails.
func (s *Store) Delete(ctx context.Context, id string) (bool, error) {
	keys := s.keys(id)
	done := make(chan deleted, 1)
	w := write{key: keys[0], keys: keys, done: done}
	why := ""
	if s.c.Refusing() {
		why = "Redis unavailable, the circuit breaker is open"
	}
	s.tmu.Lock()
	w.seq = s.ownWrite(id, w, why == "")
	s.tmu.Unlock()
	local, _ := s.local.Delete(ctx, id)
	// Behind the updates queued before it: an older update must not
	// bring the entry back after the delete.
	if why == "" {
		if why = s.enqueue(ctx, w, true); why != "" {
			s.drop(w)
		}
	}
	if why != "" {
		s.deletesUnshared.Add(1)
		s.unshared("a delete", why)
		return local, nil
	}
	select {
	case d := <-done:
		if d.err != nil {
			return local, nil
		}
		return d.found, nil
	case <-ctx.Done():
		// The delete still goes out, in its turn.
		return local, nil
	}
}

// noteReply logs the first of a run of error replies (OOM, WRONGTYPE):
// Redis is up, so the breaker says nothing, yet the fleet does not get
// the updates. Transport failures are the breaker's to log. It reports
// whether it logged; the line about updates or deletes reports their
// being unshared as well.
func (s *Store) noteReply(o op, err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) || errors.Is(err, redis.Nil) {
		return false
	}
	if s.replyFailing[o].CompareAndSwap(false, true) {
		const format = "Redis %s session cache: Redis refuses %s: %v; %s"
		if o == opLookup {
			maillog.Warnf(s.log, format, s.cacheName, opNames[o], err, opFallbacks[o])
		} else {
			s.unsharedLog.Coverf(s.log, format, s.cacheName, opNames[o], err, opFallbacks[o])
		}
		return true
	}
	return false
}

func (s *Store) replyOK(o op) {
	if s.replyFailing[o].Load() && s.replyFailing[o].CompareAndSwap(true, false) {
		maillog.Infof(s.log, "Redis %s session cache: Redis accepts %s again", s.cacheName, opNames[o])
	}
}

// scanBatch is the COUNT hint of the SCANs of Each and Clear.
const scanBatch = 500

// scan calls f with each batch of keys of this cache in Redis, on every
// master of a cluster. Each batch has a deadline of its own, not the
// whole scan: a large cache takes many. An operator's dump or flush
// waits on it, not a handshake, and a batch is a pipeline of scanBatch
// commands: its deadline is ten of redisconn's, at least a second.
func (s *Store) scan(ctx context.Context, f func(ctx context.Context, c redis.Cmdable, keys []string) error) error {
	batchTimeout := max(10*s.c.Timeout(), time.Second)
	one := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			rctx, cancel := context.WithTimeout(ctx, batchTimeout)
			keys, next, err := c.Scan(rctx, cursor, s.keyPrefix+"*", scanBatch).Result()
			if err == nil && len(keys) > 0 {
				err = f(rctx, c, keys)
			}
			cancel()
			if err != nil {
				return err
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return one(ctx, c) })
	}
	return one(ctx, s.rdb)
}

// Each lists the entries in Redis (every member's), named by their Redis
// keys: the ids themselves are not in Redis. Values that do not open are
// skipped.
func (s *Store) Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error {
	stop := errors.New("stop")
	err := s.scan(ctx, func(rctx context.Context, c redis.Cmdable, keys []string) error {
		pipe := c.Pipeline()
		gets := make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			gets[i] = pipe.Get(rctx, k)
		}
		_, _ = pipe.Exec(rctx) // each command carries its own result
		for i, k := range keys {
			v, err := gets[i].Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			e, ok := s.open(k, v)
			if !ok {
				continue
			}
			size := len(e.Session)
			clear(e.Session)
			if !visit(k, e.Written, size) {
				return stop
			}
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

// clearProgress is how often a long flush says how far it got.
const clearProgress = 5 * time.Second

// Clear removes every entry of this cache from Redis, for the whole
// fleet, and from the local cache; it returns how many Redis held.
func (s *Store) Clear(ctx context.Context) (int, error) {
	if err := s.Sync(ctx); err != nil {
		return 0, err
	}
	n := 0
	progress := time.Now()
	err := s.scan(ctx, func(rctx context.Context, c redis.Cmdable, keys []string) error {
		if time.Since(progress) >= clearProgress {
			progress = time.Now()
			maillog.Infof(s.log, "Redis %s session cache: flush going on, %d entries removed so far", s.cacheName, n)
		}
		s.tmu.Lock()
		s.changed(keys)
		for _, k := range keys {
			if sl := s.slots[k]; sl != nil {
				s.spoil(sl)
			}
		}
		s.tmu.Unlock()
		// One DEL per key: in a cluster the keys are in different slots.
		pipe := c.Pipeline()
		for _, k := range keys {
			pipe.Del(rctx, k)
		}
		cmds, err := pipe.Exec(rctx)
		for _, cmd := range cmds {
			if d, ok := cmd.(*redis.IntCmd); ok {
				n += int(d.Val())
			}
		}
		return err
	})
	for {
		_, more, _ := s.local.Expire(ctx, time.Unix(1<<62, 0), 1000, nil)
		if !more {
			break
		}
	}
	// Flushed for the whole fleet: no own write of before answers again.
	s.tmu.Lock()
	for k, sl := range s.slots {
		if sl.pending == 0 {
			s.byAge.Remove(sl.elem)
			delete(s.slots, k)
		}
	}
	s.tmu.Unlock()
	return n, err
}

// Expire expires entries of the local cache only: Redis expires its own.
func (s *Store) Expire(ctx context.Context, cutoff time.Time, max int, visit func(session []byte)) (int, bool, error) {
	return s.local.Expire(ctx, cutoff, max, visit)
}

// Stats describes the local cache; FleetStats has the Redis part.
func (s *Store) Stats(ctx context.Context) (scache.StoreStats, error) {
	return s.local.Stats(ctx)
}

// Close sends what is queued (each pipeline within the deadline), stops
// tracking and wipes the local cache. The client and the sealer are the
// caller's.
func (s *Store) Close() error {
	s.wmu.Lock()
	if !s.closed {
		s.closed = true
		close(s.writes)
	}
	s.wmu.Unlock()
	<-s.written
	s.stopRevalidate()
	<-s.revalidated
	s.tracker.Close()
	return s.local.Close()
}

// FleetStats are the counters of the shared part. Every lookup counts in
// exactly one of Hits, Misses (Redis answered), FallbackHits and
// FallbackMisses (Redis failed; the local cache answered).
type FleetStats struct {
	Hits           uint64 // lookups answered with an entry while Redis is up
	LocalHits      uint64 // ... of which answered here: a trusted copy, or an own update on its way or newer than Redis's value
	LocalMisses    uint64 // Misses answered here: an own delete on its way or newer than Redis's value
	Tracking       string // "on" (and proved alive within a second), "off", or "none" (a cluster)
	Misses         uint64 // ... without one (Unopenable included)
	FallbackHits   uint64 // lookups answered from the local cache because Redis failed
	FallbackMisses uint64 // ... that the local cache could not answer either
	Unopenable     uint64 // values in Redis that failed to open: tampered, moved, damaged
	// Updates and deletes acknowledged that reached only the local cache:
	// the other members do not see them.
	UpdatesUnshared uint64
	DeletesUnshared uint64
	// Unproved counts own updates and deletes not yet seen to hold in
	// Redis: queued, on their way, or landed and waiting for the check
	// (a fence and a GET) after which an outage may answer them. A
	// gauge; it stays up while Redis is away or tracking is off.
	Unproved uint64
	// Backend is the Redis client's: its state (up, down, probing) and
	// counters. A client shared by several stores shows the same figures
	// in each.
	Backend redisconn.Stats
}

// FleetStats returns the shared part's counters.
func (s *Store) FleetStats() FleetStats {
	return FleetStats{
		Hits:            s.hits.Load(),
		LocalHits:       s.localHits.Load(),
		LocalMisses:     s.localMisses.Load(),
		Tracking:        s.trackingState(),
		Misses:          s.misses.Load(),
		FallbackHits:    s.fallbackHits.Load(),
		FallbackMisses:  s.fallbackMisses.Load(),
		Unopenable:      s.unopenable.Load(),
		UpdatesUnshared: s.updatesUnshared.Load(),
		DeletesUnshared: s.deletesUnshared.Load(),
		Unproved:        s.unprovedCount(),
		Backend:         s.c.Stats(),
	}
}

func (s *Store) unprovedCount() uint64 {
	s.tmu.Lock()
	n := int64(len(s.unproved))
	s.tmu.Unlock()
	return uint64(max(0, n+s.inFlight.Load()))
}

func (s *Store) trackingState() string {
	switch _, on := s.tracker.State(); {
	case s.tracker == nil:
		return "none"
	case on:
		return "on"
	}
	return "off"
}

// CollectMetrics emits the shared part's counters under the cache's
// label, with the Redis client's state and counters (a client shared by
// several stores shows the same figures in each).
func (s *Store) CollectMetrics(_ context.Context, emit metrics.Emit) {
	st := s.FleetStats()
	d := func(name, help string) metrics.Desc { return metrics.Desc{Name: "cache_redis_" + name, Help: help} }
	emit.Info(d("tracking", "Invalidation tracking of the local copies: on (proved alive within a second), off, or none (a cluster)."), st.Tracking)
	emit.Counter(d("hits", "Lookups answered with an entry while Redis is up."), st.Hits)
	emit.Counter(d("local_hits", "Of those, answered from a copy Redis reported unchanged, or an own update on its way or newer than Redis's value."), st.LocalHits)
	emit.Counter(d("local_misses", "Misses answered locally: an own delete on its way or newer than Redis's value."), st.LocalMisses)
	emit.Counter(d("misses", "Lookups answered without an entry while Redis is up."), st.Misses)
	emit.Counter(d("unopenable", "Values in Redis that failed to open: tampered, moved or damaged."), st.Unopenable)
	emit.Counter(metrics.Desc{Name: "cache_fallback_hits", Help: "Lookups answered from the local cache because Redis failed."}, st.FallbackHits)
	emit.Counter(metrics.Desc{Name: "cache_fallback_misses", Help: "Lookups Redis failed that the local cache could not answer either."}, st.FallbackMisses)
	emit.Counter(metrics.Desc{Name: "cache_updates_unshared", Help: "Updates acknowledged that reached only the local cache."}, st.UpdatesUnshared)
	emit.Counter(metrics.Desc{Name: "cache_deletes_unshared", Help: "Deletes acknowledged that reached only the local cache."}, st.DeletesUnshared)
	emit.Gauge(d("unproved", "Own updates and deletes not yet seen to hold in Redis (queued, on their way, or waiting for the check after which an outage answers them)."), float64(st.Unproved))
	s.c.Collect(emit, s.cacheName+"_cache_redis_")
}

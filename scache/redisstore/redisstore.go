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
// # The local cache
//
// Every update also goes to a bounded in-memory cache (memstore, with the
// configured *_max_entries and *_max_bytes), and every delete to both.
// While Redis is away (an error, the deadline, the circuit breaker open)
// lookups are answered from it; updates go to it only and are
// acknowledged; when Redis is back, traffic goes to Redis again and the
// outage's updates are not replayed (they may be stale by then, and a
// replay storm is what a recovering Redis needs least).
//
// While Redis is up, a lookup is answered locally only if Redis has said
// the entry is unchanged since this member read it: the store tracks its
// keys (redisconn.Track, CLIENT TRACKING in broadcasting mode), and Redis
// reports every change to any of them, by any member, an expiry or an
// eviction included. A lookup that Redis answers while tracking is on
// leaves a copy here, trusted until Redis reports a change to its key or
// tracking is lost; any other lookup asks Redis. So a delete or update
// through another member is seen here as soon as its invalidation arrives
// (well under a millisecond on a LAN), and at worst, if the connections
// are cut without an error, when the tracker's heartbeat fails (in about
// a second). A cluster has no tracker: there every lookup asks Redis.
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
// long as the request's deadline and the Redis timeout allow; one that
// finds none in time, or that Redis refuses, is counted as unshared (and
// logged), never silently lost.
//
// The local cache does not expire by itself, so Store implements
// scache.Expirer for it: the cache's sweeper removes expired local entries
// on the memory store's schedule and mixes them into the PRNG pool, as it
// would for a memory cache. Redis entries are never swept.
//
// No Redis failure is an error to the caller: a lookup becomes a local hit
// or a miss, an update or delete is done locally and counted. Every call
// carries redisconn's deadline under the request's own.
package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/metrics"
	"github.com/gotlsmgr/tlsmgr/scache"
	"github.com/gotlsmgr/tlsmgr/scache/memstore"
	"github.com/redis/go-redis/v9"
)

// Logger receives the store's warnings. The daemon's logger rate-limits
// them per message.
type Logger interface {
	Info(format string, args ...any)
	Warn(format string, args ...any)
}

type discard struct{}

func (discard) Info(string, ...any) {}
func (discard) Warn(string, ...any) {}

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
	log       Logger

	tracker *redisconn.Tracker // nil for a cluster
	tmu     sync.Mutex
	trusted map[string]trustMark // by Redis key: local copies equal to Redis's
	// stripes count the changes seen per hash of the key, so that a
	// lookup whose key changed while Redis answered does not trust the
	// answer.
	stripes [trustStripes]uint64
	// pending counts the queued writes by the id's first Redis key: while
	// one is on its way, lookups of the id are answered locally, so that
	// a member always reads its own writes.
	pending map[string]int

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
}

// trustMark says that the local copy of id was equal to Redis's value in
// tracker generation gen.
type trustMark struct {
	id  string
	gen uint64
}

const trustStripes = 64

// The write queue: its bound, and the most writes one pipeline carries.
const (
	writeQueue = 1024
	writeBatch = 64
)

// write is one update (val set) or delete (keys) on its way to Redis.
// done, if set, receives whether the delete found anything, or the error.
type write struct {
	key  string
	val  []byte
	ttl  time.Duration
	keys []string
	done chan deleted
}

type deleted struct {
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
	_ scache.Expirer          = (*Store)(nil)
	_ scache.MetricsCollector = (*Store)(nil)
	_ scache.Lister           = (*Store)(nil)
	_ scache.Clearer          = (*Store)(nil)
	_ scache.Resizer          = (*Store)(nil)
)

// New returns the store of cache cacheName ("smtpd", "smtp", "lmtp") on
// client, sealing with sealer, its Redis keys under prefix (the settings'
// key_prefix), its local part bounded by lim. log may be nil.
func New(client *redisconn.Client, sealer *seal.Sealer, prefix, cacheName string, lim scache.Limits, log Logger) (*Store, error) {
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
	if log == nil {
		log = discard{}
	}
	s := &Store{
		c:         client,
		rdb:       client.Redis(),
		sealer:    sealer,
		keyPrefix: prefix + "c:" + cacheName + ":",
		cacheName: cacheName,
		local:     memstore.New(lim),
		log:       log,
		trusted:   make(map[string]trustMark),
		pending:   make(map[string]int),
		writes:    make(chan write, writeQueue),
		written:   make(chan struct{}),
	}
	s.lim.Store(&lim)
	s.tracker = client.Track(s.keyPrefix, s.invalidated)
	go s.writer()
	return s, nil
}

// SetLimits bounds the local part by lim from now on (scache.Resizer): a
// smaller bound evicts its oldest-written entries at once, and forgets
// trusted copies beyond it. Redis's entries are not touched: Redis
// expires them itself.
func (s *Store) SetLimits(ctx context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("redisstore: limits %+v must both be positive", lim)
	}
	s.lim.Store(&lim)
	if err := s.local.SetLimits(ctx, lim); err != nil {
		return err
	}
	s.tmu.Lock()
	for k := range s.trusted {
		if len(s.trusted) <= lim.MaxEntries {
			break
		}
		delete(s.trusted, k)
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

// Get returns the entry from the trusted local copy, from Redis, or from
// the local cache when Redis fails. It fails only with scache.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (scache.Entry, error) {
	var e scache.Entry
	err := errNotUsed
	// With the breaker open, straight to the local cache: no hashing,
	// no command to build.
	if !s.c.Refusing() {
		keys := s.keys(id)
		if e, ok, err := s.localAnswer(ctx, keys[0], id); ok {
			if err != nil {
				s.misses.Add(1)
				s.localMisses.Add(1)
				return scache.Entry{}, err
			}
			s.hits.Add(1)
			s.localHits.Add(1)
			return e, nil
		}
		mark := s.beforeRead(keys[0])
		var first bool
		e, first, err = s.getRedis(ctx, keys)
		if err == nil && first {
			s.trust(ctx, keys[0], id, mark, e)
		}
	}
	switch {
	case err == nil:
		s.hits.Add(1)
		return e, nil
	case errors.Is(err, scache.ErrNotFound):
		s.misses.Add(1)
		return scache.Entry{}, scache.ErrNotFound
	}
	e, err = s.local.Get(ctx, id)
	if err == nil {
		s.fallbackHits.Add(1)
	} else {
		s.fallbackMisses.Add(1)
	}
	return e, err
}

// localAnswer answers a lookup of id locally (ok) while a write of it is
// on its way to Redis, with the entry or a miss; or with the local copy if
// Redis has reported no change to key since it was read, with tracking on
// all along.
func (s *Store) localAnswer(ctx context.Context, key, id string) (e scache.Entry, ok bool, err error) {
	gen, on := s.tracker.State()
	s.tmu.Lock()
	pending := s.pending[key] > 0
	m, trusted := s.trusted[key]
	s.tmu.Unlock()
	if pending {
		e, err = s.local.Get(ctx, id)
		return e, true, err
	}
	if !on || !trusted || m.id != id || m.gen != gen {
		return scache.Entry{}, false, nil
	}
	e, err = s.local.Get(ctx, id)
	if err != nil {
		// Evicted from the bounded local cache.
		s.changed([]string{key})
		return scache.Entry{}, false, nil
	}
	return e, true, nil
}

// readMark is what trust compares after Redis has answered.
type readMark struct {
	gen uint64
	on  bool
	seq uint64
}

func (s *Store) beforeRead(key string) readMark {
	gen, on := s.tracker.State()
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return readMark{gen: gen, on: on, seq: s.stripes[stripe(key)]}
}

// trust keeps e, which Redis returned under key for id, as a trusted local
// copy, unless tracking changed or a change to a key of the same stripe
// arrived while Redis answered: the answer might be older than that.
func (s *Store) trust(ctx context.Context, key, id string, m readMark, e scache.Entry) {
	if !m.on {
		return
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if gen, on := s.tracker.State(); gen != m.gen || !on || s.stripes[stripe(key)] != m.seq {
		return
	}
	if s.local.Put(ctx, id, e) != nil {
		return
	}
	if len(s.trusted) >= s.lim.Load().MaxEntries {
		for k := range s.trusted {
			delete(s.trusted, k)
			break
		}
	}
	s.trusted[key] = trustMark{id: id, gen: m.gen}
}

// invalidated is the tracker's report: keys changed in Redis, or (nil)
// every copy must go.
func (s *Store) invalidated(keys []string) {
	if keys == nil {
		s.tmu.Lock()
		clear(s.trusted)
		for i := range s.stripes {
			s.stripes[i]++
		}
		s.tmu.Unlock()
		return
	}
	s.changed(keys)
}

// changed forgets the trusted copies of keys, and makes lookups of them
// under way distrust their answers.
func (s *Store) changed(keys []string) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	for _, k := range keys {
		s.stripes[stripe(k)]++
		delete(s.trusted, k)
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

// getRedis returns the first entry under keys that opens, and whether it
// was under the first key; ErrNotFound when Redis has none (or none that
// opens), or the Redis failure.
func (s *Store) getRedis(ctx context.Context, keys []string) (scache.Entry, bool, error) {
	if ctx.Err() != nil {
		return scache.Entry{}, false, errNotUsed
	}
	rctx, cancel := s.c.WithTimeout(ctx)
	defer cancel()
	if len(keys) == 1 {
		v, err := s.rdb.Get(rctx, keys[0]).Bytes()
		if err != nil {
			return scache.Entry{}, false, s.redisErr(opLookup, err)
		}
		s.replyOK(opLookup)
		if e, ok := s.open(keys[0], v); ok {
			return e, true, nil
		}
		return scache.Entry{}, false, scache.ErrNotFound
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
			return scache.Entry{}, false, s.redisErr(opLookup, err)
		}
		if e, ok := s.open(keys[i], v); ok {
			s.replyOK(opLookup)
			return e, i == 0, nil
		}
	}
	s.replyOK(opLookup)
	return scache.Entry{}, false, scache.ErrNotFound
}

// redisErr passes a miss on as ErrNotFound and notes error replies.
func (s *Store) redisErr(o op, err error) error {
	if errors.Is(err, redis.Nil) {
		s.replyOK(o)
		return scache.ErrNotFound
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
		s.log.Warn("Redis %s session cache: a value failed to open (%v); treated as a miss", s.cacheName, err)
		return scache.Entry{}, false
	}
	// The session stays in the opened buffer, handed to the caller: no
	// second copy of it is made, so none is left to wipe.
	return scache.Entry{
		Written: time.Unix(0, int64(binary.BigEndian.Uint64(p[:writtenLen]))),
		Session: p[writtenLen:],
	}, true
}

// Put stores the entry in the local cache and queues it for Redis, to
// expire at e.Expires. It fails only with scache.ErrTooLarge, and then
// stores nothing.
func (s *Store) Put(ctx context.Context, id string, e scache.Entry) error {
	if scache.Size(id, e.Session) > s.lim.Load().MaxBytes {
		return scache.ErrTooLarge
	}
	keys := s.keys(id)
	s.changed(keys[:1])
	if err := s.local.Put(ctx, id, e); err != nil {
		return err
	}
	// A request out of time does not even queue its write.
	if ctx.Err() != nil || s.c.Refusing() {
		s.updatesUnshared.Add(1)
		return nil
	}
	ttl, ok := redisTTL(e.Expires, time.Now())
	if !ok || e.Written.Before(minWritten) || e.Written.After(maxWritten) {
		// Nothing valid to share; an older version in Redis must not
		// outlive the replacement.
		s.changed(keys)
		if !s.enqueue(ctx, write{keys: keys}, false) {
			s.updatesUnshared.Add(1)
		}
		return nil
	}
	p := make([]byte, writtenLen+len(e.Session))
	binary.BigEndian.PutUint64(p, uint64(e.Written.UnixNano()))
	copy(p[writtenLen:], e.Session)
	v := s.sealer.Seal([]byte(keys[0]), p)
	clear(p)
	if !s.enqueue(ctx, write{key: keys[0], val: v, ttl: ttl}, false) {
		s.updatesUnshared.Add(1)
	}
	return nil
}

// enqueue hands w to the writer, waiting for room until ctx is done. An
// update (!wait) waits at most the Redis timeout as well: a queue that
// stays full that long means Redis cannot keep up, and the update is
// then refused at once, which the caller counts as unshared. Deletes and
// Sync wait for their answer anyway. A closed store refuses everything.
func (s *Store) enqueue(ctx context.Context, w write, wait bool) bool {
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	if s.closed {
		return false
	}
	s.addPending(w, 1)
	select {
	case s.writes <- w:
		return true
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
			s.log.Info("Redis %s session cache: the write queue has room again", s.cacheName)
		}
		return true
	case <-ctx.Done():
	case <-expire:
	}
	s.addPending(w, -1)
	if !wait && s.queueFull.CompareAndSwap(false, true) {
		s.log.Warn("Redis %s session cache: %d writes are waiting for Redis; updates that find no room are kept in the local cache only", s.cacheName, writeQueue)
	}
	return false
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
		s.send(batch)
		for _, w := range batch {
			s.addPending(w, -1)
		}
		clear(batch)
	}
}

// send writes batch to Redis in one round trip under one deadline.
func (s *Store) send(batch []write) {
	ctx, cancel := s.c.WithTimeout(context.Background())
	defer cancel()
	if len(batch) == 1 && batch[0].val != nil {
		w := batch[0]
		err := s.rdb.Set(ctx, w.key, w.val, w.ttl).Err()
		s.setDone(w, err)
		return
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
	_, _ = pipe.Exec(ctx) // each command carries its own result
	for i, w := range batch {
		if w.val != nil {
			s.setDone(w, sets[i].Err())
			continue
		}
		var d deleted
		for _, cmd := range dels[i] {
			n, err := cmd.Result()
			if err != nil {
				// Some names may be gone, others not: the delete
				// did not reach the fleet.
				d = deleted{err: err}
				break
			}
			d.found = d.found || n > 0
		}
		s.delDone(w, d)
	}
}

func (s *Store) setDone(w write, err error) {
	if err != nil {
		s.noteReply(opUpdate, err)
		s.updatesUnshared.Add(1)
		return
	}
	s.replyOK(opUpdate)
}

func (s *Store) delDone(w write, d deleted) {
	o := opDelete
	if w.done == nil {
		o = opUpdate // the delete of an update that had nothing to share
	}
	if d.err != nil {
		s.noteReply(o, d.err)
		if o == opDelete {
			s.deletesUnshared.Add(1)
		} else {
			s.updatesUnshared.Add(1)
		}
	} else {
		s.replyOK(o)
	}
	if w.done != nil {
		w.done <- d
	}
}

// Sync waits until every write queued before the call has been sent to
// Redis (or failed), and every invalidation Redis sent this member before
// then has been applied; or until ctx is done. After a.Sync and b.Sync,
// b sees what a did before.
func (s *Store) Sync(ctx context.Context) error {
	done := make(chan deleted, 1)
	if !s.enqueue(ctx, write{done: done}, true) {
		return errors.Join(errors.New("redisstore: closed or timed out"), ctx.Err())
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.tracker.Sync(ctx)
}

// pendingKey is the key by which w counts in pending: the id's first
// Redis key, which lookups check; "" for a Sync.
func (w write) pendingKey() string {
	if w.val != nil {
		return w.key
	}
	if len(w.keys) > 0 {
		return w.keys[0]
	}
	return ""
}

func (s *Store) addPending(w write, n int) {
	k := w.pendingKey()
	if k == "" {
		return
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.pending[k] += n; s.pending[k] <= 0 {
		delete(s.pending, k)
	}
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
	s.changed(keys)
	local, _ := s.local.Delete(ctx, id)
	if s.c.Refusing() {
		s.deletesUnshared.Add(1)
		return local, nil
	}
	// Behind the updates queued before it: an older update must not
	// bring the entry back after the delete.
	done := make(chan deleted, 1)
	if !s.enqueue(ctx, write{keys: keys, done: done}, true) {
		s.deletesUnshared.Add(1)
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
// the updates. Transport failures are the breaker's to log.
func (s *Store) noteReply(o op, err error) {
	var rerr redis.Error
	if !errors.As(err, &rerr) || errors.Is(err, redis.Nil) {
		return
	}
	if s.replyFailing[o].CompareAndSwap(false, true) {
		s.log.Warn("Redis %s session cache: Redis refuses %s: %v; %s", s.cacheName, opNames[o], err, opFallbacks[o])
	}
}

func (s *Store) replyOK(o op) {
	if s.replyFailing[o].Load() && s.replyFailing[o].CompareAndSwap(true, false) {
		s.log.Info("Redis %s session cache: Redis accepts %s again", s.cacheName, opNames[o])
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
			s.log.Info("Redis %s session cache: flush going on, %d entries removed so far", s.cacheName, n)
		}
		s.changed(keys)
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
	s.tracker.Close()
	return s.local.Close()
}

// FleetStats are the counters of the shared part. Every lookup counts in
// exactly one of Hits, Misses (Redis answered), FallbackHits and
// FallbackMisses (Redis failed; the local cache answered).
type FleetStats struct {
	Hits           uint64 // lookups answered with an entry while Redis is up
	LocalHits      uint64 // ... of which answered here: a copy Redis reported unchanged, or an update on its way
	LocalMisses    uint64 // Misses answered here: a delete on its way
	Tracking       string // "on", "off", or "none" (a cluster)
	Misses         uint64 // ... without one (Unopenable included)
	FallbackHits   uint64 // lookups answered from the local cache because Redis failed
	FallbackMisses uint64 // ... that the local cache could not answer either
	Unopenable     uint64 // values in Redis that failed to open: tampered, moved, damaged
	// Updates and deletes acknowledged that reached only the local cache:
	// the other members do not see them.
	UpdatesUnshared uint64
	DeletesUnshared uint64
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
		Backend:         s.c.Stats(),
	}
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
	emit.Info(d("tracking", "Invalidation tracking of the local copies: on, off, or none (a cluster)."), st.Tracking)
	emit.Counter(d("hits", "Lookups answered with an entry while Redis is up."), st.Hits)
	emit.Counter(d("local_hits", "Of those, answered from a copy Redis reported unchanged, or an update on its way."), st.LocalHits)
	emit.Counter(d("local_misses", "Misses answered locally: a delete on its way."), st.LocalMisses)
	emit.Counter(d("misses", "Lookups answered without an entry while Redis is up."), st.Misses)
	emit.Counter(d("unopenable", "Values in Redis that failed to open: tampered, moved or damaged."), st.Unopenable)
	emit.Counter(metrics.Desc{Name: "cache_fallback_hits", Help: "Lookups answered from the local cache because Redis failed."}, st.FallbackHits)
	emit.Counter(metrics.Desc{Name: "cache_fallback_misses", Help: "Lookups Redis failed that the local cache could not answer either."}, st.FallbackMisses)
	emit.Counter(metrics.Desc{Name: "cache_updates_unshared", Help: "Updates acknowledged that reached only the local cache."}, st.UpdatesUnshared)
	emit.Counter(metrics.Desc{Name: "cache_deletes_unshared", Help: "Deletes acknowledged that reached only the local cache."}, st.DeletesUnshared)
	s.c.Collect(emit, s.cacheName+"_cache_redis_")
}

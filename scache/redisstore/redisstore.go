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
// Lookups ask Redis first, so that a delete through another member is
// seen, and only when Redis fails (an error, the deadline, the circuit
// breaker open) the local cache. While Redis is away updates go to the
// local cache only and are acknowledged; when it is back, traffic goes to
// Redis again and the outage's updates are not replayed (they may be stale
// by then, and a replay storm is what a recovering Redis needs least).
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
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/fleet/seal"
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
	lim       scache.Limits
	local     *memstore.Store
	log       Logger

	hits, misses, unopenable         atomic.Uint64
	fallbackHits, fallbackMisses     atomic.Uint64
	updatesUnshared, deletesUnshared atomic.Uint64
	// replyFailing is set, per kind of call, while Redis refuses it with
	// an error reply (OOM at maxmemory, an ACL): the breaker does not
	// count those as outages, so the store logs their transitions itself.
	replyFailing [nOps]atomic.Bool
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
	_ scache.Store   = (*Store)(nil)
	_ scache.Expirer = (*Store)(nil)
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
	return &Store{
		c:         client,
		rdb:       client.Redis(),
		sealer:    sealer,
		keyPrefix: prefix + "c:" + cacheName + ":",
		cacheName: cacheName,
		lim:       lim,
		local:     memstore.New(lim),
		log:       log,
	}, nil
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

// Get returns the entry from Redis, or from the local cache when Redis
// fails. It fails only with scache.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (scache.Entry, error) {
	var e scache.Entry
	err := errNotUsed
	// With the breaker open, straight to the local cache: no hashing,
	// no command to build.
	if !s.c.Refusing() {
		e, err = s.getRedis(ctx, s.keys(id))
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

// getRedis returns the first entry under keys that opens, ErrNotFound
// when Redis has none (or none that opens), or the Redis failure.
func (s *Store) getRedis(ctx context.Context, keys []string) (scache.Entry, error) {
	if ctx.Err() != nil {
		return scache.Entry{}, errNotUsed
	}
	rctx, cancel := s.c.WithTimeout(ctx)
	defer cancel()
	if len(keys) == 1 {
		v, err := s.rdb.Get(rctx, keys[0]).Bytes()
		if err != nil {
			return scache.Entry{}, s.redisErr(opLookup, err)
		}
		s.replyOK(opLookup)
		if e, ok := s.open(keys[0], v); ok {
			return e, nil
		}
		return scache.Entry{}, scache.ErrNotFound
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
			return scache.Entry{}, s.redisErr(opLookup, err)
		}
		if e, ok := s.open(keys[i], v); ok {
			s.replyOK(opLookup)
			return e, nil
		}
	}
	s.replyOK(opLookup)
	return scache.Entry{}, scache.ErrNotFound
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

// Put stores the entry in the local cache and in Redis until e.Expires.
// It fails only with scache.ErrTooLarge, and then stores nothing.
func (s *Store) Put(ctx context.Context, id string, e scache.Entry) error {
	if scache.Size(id, e.Session) > s.lim.MaxBytes {
		return scache.ErrTooLarge
	}
	if err := s.local.Put(ctx, id, e); err != nil {
		return err
	}
	if s.c.Refusing() {
		s.updatesUnshared.Add(1)
		return nil
	}
	ttl, ok := redisTTL(e.Expires, time.Now())
	if !ok || e.Written.Before(minWritten) || e.Written.After(maxWritten) {
		// Nothing valid to share; an older version in Redis must not
		// outlive the replacement.
		if _, err := s.delRedis(ctx, opUpdate, s.keys(id)); err != nil {
			s.updatesUnshared.Add(1)
		}
		return nil
	}
	if err := s.setRedis(ctx, s.writeKey(id), e, ttl); err != nil {
		s.updatesUnshared.Add(1)
	}
	return nil
}

func (s *Store) setRedis(ctx context.Context, key string, e scache.Entry, ttl time.Duration) error {
	if ctx.Err() != nil {
		return errNotUsed
	}
	p := make([]byte, writtenLen+len(e.Session))
	binary.BigEndian.PutUint64(p, uint64(e.Written.UnixNano()))
	copy(p[writtenLen:], e.Session)
	v := s.sealer.Seal([]byte(key), p)
	clear(p)
	rctx, cancel := s.c.WithTimeout(ctx)
	defer cancel()
	if err := s.rdb.Set(rctx, key, v, ttl).Err(); err != nil {
		s.noteReply(opUpdate, err)
		return err
	}
	s.replyOK(opUpdate)
	return nil
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
// from the local cache. It reports what Redis had while Redis answers,
// what the local cache had when it does not, and never fails.
func (s *Store) Delete(ctx context.Context, id string) (bool, error) {
	local, _ := s.local.Delete(ctx, id)
	if s.c.Refusing() {
		s.deletesUnshared.Add(1)
		return local, nil
	}
	n, err := s.delRedis(ctx, opDelete, s.keys(id))
	if err != nil {
		s.deletesUnshared.Add(1)
		return local, nil
	}
	return n > 0, nil
}

// delRedis deletes keys and returns how many existed. Several keys go in
// one pipeline of single-key DELs: in a Cluster the names of one id are
// in different slots, where a multi-key DEL fails with CROSSSLOT.
func (s *Store) delRedis(ctx context.Context, o op, keys []string) (int64, error) {
	if ctx.Err() != nil {
		return 0, errNotUsed
	}
	rctx, cancel := s.c.WithTimeout(ctx)
	defer cancel()
	if len(keys) == 1 {
		n, err := s.rdb.Del(rctx, keys[0]).Result()
		if err != nil {
			s.noteReply(o, err)
			return 0, err
		}
		s.replyOK(o)
		return n, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Del(rctx, k)
	}
	_, _ = pipe.Exec(rctx)
	var total int64
	for _, cmd := range cmds {
		n, err := cmd.Result()
		if err != nil {
			// Some names may be gone, others not: the delete did not
			// reach the fleet.
			s.noteReply(o, err)
			return 0, err
		}
		total += n
	}
	s.replyOK(o)
	return total, nil
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

// Expire expires entries of the local cache only: Redis expires its own.
func (s *Store) Expire(ctx context.Context, cutoff time.Time, max int, visit func(session []byte)) (int, bool, error) {
	return s.local.Expire(ctx, cutoff, max, visit)
}

// Stats describes the local cache; FleetStats has the Redis part.
func (s *Store) Stats(ctx context.Context) (scache.StoreStats, error) {
	return s.local.Stats(ctx)
}

// Close wipes the local cache. The client and the sealer are the
// caller's.
func (s *Store) Close() error { return s.local.Close() }

// FleetStats are the counters of the shared part. Every lookup counts in
// exactly one of Hits, Misses (Redis answered), FallbackHits and
// FallbackMisses (Redis failed; the local cache answered).
type FleetStats struct {
	Hits           uint64 // lookups Redis answered with an entry
	Misses         uint64 // lookups Redis answered without one (Unopenable included)
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
		Misses:          s.misses.Load(),
		FallbackHits:    s.fallbackHits.Load(),
		FallbackMisses:  s.fallbackMisses.Load(),
		Unopenable:      s.unopenable.Load(),
		UpdatesUnshared: s.updatesUnshared.Load(),
		DeletesUnshared: s.deletesUnshared.Load(),
		Backend:         s.c.Stats(),
	}
}

// AddStats adds the counters as name/value pairs for a stats reply, in
// the server's StatsFunc form; the caller prefixes the names (e.g. with
// "smtpd_cache_").
func (st FleetStats) AddStats(add func(name, value string)) {
	u := func(name string, v uint64) { add(name, strconv.FormatUint(v, 10)) }
	add("redis_state", st.Backend.State)
	u("redis_hits", st.Hits)
	u("redis_misses", st.Misses)
	u("redis_unopenable", st.Unopenable)
	u("fallback_hits", st.FallbackHits)
	u("fallback_misses", st.FallbackMisses)
	u("updates_unshared", st.UpdatesUnshared)
	u("deletes_unshared", st.DeletesUnshared)
	u("redis_ops", st.Backend.Ops)
	u("redis_errors", st.Backend.Errors)
	u("redis_timeouts", st.Backend.Timeouts)
	u("redis_refused", st.Backend.Refused)
	u("redis_breaker_opens", st.Backend.BreakerOpens)
}

// Package scache implements the TLS session caches that tlsmgr serves:
// expiry by write time, bounds, and the incremental background sweep.
// Where the entries live is a Store's business (memory, a file, a remote
// server), so every Store call takes a context and may fail.
package scache

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Get when no entry has the id.
var ErrNotFound = errors.New("scache: no such entry")

// ErrTooLarge is returned by Store.Put when one entry alone exceeds the
// store's byte bound.
var ErrTooLarge = errors.New("scache: entry larger than the cache bound")

// ErrStoreFailing is returned by Put and Delete of a store that cannot
// commit changes (a full disk): it refuses them rather than acknowledge
// changes it may never write, until a commit succeeds again. The error
// also wraps the cause.
var ErrStoreFailing = errors.New("scache: store refuses changes until a commit succeeds")

// Entry is one cached TLS session. Session is opaque: it is never parsed
// and never logged beyond its length.
type Entry struct {
	Written time.Time // when the client stored it; expiry counts from here
	// Expires is Written plus the cache timeout, given to Put so that a
	// store whose entries expire by themselves (Redis) can set their
	// lifetime. The cache still decides expiry from Written, exactly as
	// Postfix does; Get need not return Expires.
	Expires time.Time
	Session []byte
}

// Limits bound a store. A store that is full evicts the entries closest to
// expiry (the oldest written, since one cache has one timeout) to make room.
type Limits struct {
	MaxEntries int   // > 0
	MaxBytes   int64 // > 0; counts id + session + EntryOverhead per entry
}

// EntryOverhead is what every store charges per entry against
// Limits.MaxBytes on top of the id and session bytes, so that a flood of
// tiny entries is bounded too.
const EntryOverhead = 64

// Size is what one entry counts against Limits.MaxBytes.
func Size(id string, session []byte) int64 {
	return int64(len(id)+len(session)) + EntryOverhead
}

// Store holds the entries of one cache. Implementations must be safe for
// concurrent use. Get returns a copy (or otherwise immutable bytes) the
// caller may keep.
type Store interface {
	Get(ctx context.Context, id string) (Entry, error)
	// Put stores e under id, replacing any older entry, evicting others
	// when the limits require it.
	Put(ctx context.Context, id string, e Entry) error
	// Delete reports whether an entry was removed.
	Delete(ctx context.Context, id string) (bool, error)
	// Expire removes at most max entries written before cutoff, calling
	// visit (if not nil) with each removed entry's session bytes, which
	// visit must not keep. It reports how many it removed and whether more
	// expired entries may remain. A store keeps expired entries until
	// Expire removes them (the cache's sweeper drives it); one whose
	// entries expire by themselves too (Redis) still sweeps the copies it
	// holds locally.
	Expire(ctx context.Context, cutoff time.Time, max int, visit func(session []byte)) (removed int, more bool, err error)
	// SetLimits bounds the store by lim (both positive) from now on (a
	// reload of main.cf). A smaller bound evicts the entries closest to
	// expiry at once, down to it, counted in StoreStats.Evictions; a
	// larger one only lets the store grow. No other entry is lost.
	SetLimits(ctx context.Context, lim Limits) error
	// Each calls visit with every entry's id, write time and session
	// size, until visit returns false or ctx is done (tlsmgrctl dump).
	Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error
	// Stats describes the current contents.
	Stats(ctx context.Context) (StoreStats, error)
	Close() error
}

// Committer is implemented by stores that commit writes in the background
// (boltstore): a write is visible to Get at once, but the bounds are
// applied when it is committed. Commit returns when every earlier write
// is, or at once with ErrStoreFailing while commits fail.
type Committer interface {
	Commit(ctx context.Context) error
}

// StoreStats is a snapshot of a store's size and lifetime counters.
type StoreStats struct {
	Entries   int
	Bytes     int64
	Evictions uint64 // entries removed to respect Limits

	// Stores that commit in the background (Committer) acknowledge a change
	// before it is written; these say what became of such changes.
	Pending int    // acknowledged changes not yet committed
	Failing bool   // commits fail: Put and Delete return ErrStoreFailing
	Refused uint64 // Puts and Deletes refused with ErrStoreFailing
	Lost    uint64 // acknowledged changes that were never committed
}

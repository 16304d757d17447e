// Package boltstore is an scache.Store kept in a file with go.etcd.io/bbolt,
// for the btree:, hash:, lmdb: and sdbm: cache databases (whatever the type
// name, the format is this package's own).
//
// The file is opened once, before the daemon chroots; every later access,
// including starting over on a damaged file, goes through that descriptor.
//
// Crash safety. Commits are not synced (bbolt NoSync): a killed process
// loses nothing the kernel already has, and bbolt's copy-on-write pages
// with the meta page written last keep the file consistent. Against power
// loss, Open records with a synced commit that the file is in use during
// this kernel boot (the boot id), and Close syncs everything, then records
// with a synced commit that the file is clean as of that very transaction.
// At the next Open the file is trusted only if that clean record is still
// the newest transaction, or if it was last opened during the current boot
// (the process died, the kernel did not). Otherwise it was open when the
// machine went down and unsynced pages may be missing or stale.
//
// Proof at Open. Before bbolt maps an existing file, its page tree is
// walked with bounds checks (checkStructure), so that bbolt never follows
// a damaged page into a fault, a cycle or a huge allocation, where it
// would crash rather than panic. Then every entry's CRC-32C is verified,
// and the counters and the expiry index must describe exactly the entries
// found. A file that fails anything is renamed PATH.corrupt-<unix time>,
// with a warning, and the store starts empty: never a crash loop.
//
// While running, Get verifies the checksum of what it returns (a mismatch
// is deleted and reported as a miss), and a panic or memory fault inside
// bbolt (the file damaged under us) truncates the file through the kept
// descriptor and starts over, with a warning.
//
// Layout and costs. Entries are keyed by id; an expiry index keyed by
// (write time, id) makes eviction and Expire ordered range scans, and the
// entry count and byte total are kept in the same transactions, so Stats
// needs no scan (Open counts anyway, to check them). bbolt reuses freed
// pages, so churn does not grow the file. The freelist is written only by
// Close (NoFreelistSync), which keeps commits small; after a crash bbolt
// rebuilds it at Open by walking the tree.
//
// Failed commits. Puts and Deletes are committed in the background
// (writebehind.go). When commits fail (the disk is full) nothing
// acknowledged is dropped while the store is open: the failed changes stay
// queued and are retried with back-off, and new Puts and Deletes are
// refused with scache.ErrStoreFailing until the backlog is committed.
// Lookups, Expire and Stats keep working throughout.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// Options tune Open.
type Options struct {
	// Logger receives warnings about damaged or untrusted files and the
	// reports of failing commits; nil discards them.
	Logger *slog.Logger
	// LockTimeout bounds the wait for another process holding the file
	// (an older tlsmgr still shutting down). Zero means 5 seconds.
	LockTimeout time.Duration
}

// ErrClosed is returned by calls on a closed store.
var ErrClosed = errors.New("boltstore: store is closed")

// ErrUnavailable is returned after the file was found damaged while
// running and could not be started over.
var ErrUnavailable = errors.New("boltstore: cache file unavailable")

// Store is a persistent scache.Store. It is safe for concurrent use.
type Store struct {
	path string                        // for messages only: the name may not resolve after chroot
	lim  atomic.Pointer[scache.Limits] // changed by SetLimits
	log  *slog.Logger
	boot string // kernel boot id, read before chroot hides /proc

	// mu is held shared by every call and exclusively by Close and by a
	// reset after damage, so that the database is never swapped under a
	// running transaction.
	mu     sync.RWMutex
	file   *os.File // kept open; bbolt gets duplicates of it
	db     *bolt.DB // nil after Close or a failed reset
	closed bool

	wb       writeBehind
	deleteMu sync.Mutex // see Delete

	evictions atomic.Uint64
	damaged   atomic.Uint64
	resets    atomic.Uint64
	setAside  atomic.Uint64 // files moved aside at Open: damaged or untrusted

	// commitFault, while set, fails write-behind commits (tests only).
	commitFault atomic.Pointer[error]
}

// Get returns the entry for id. An entry that fails its checksum is
// deleted and reported as missing.
func (s *Store) Get(ctx context.Context, id string) (scache.Entry, error) {
	if e, found, ok := s.getQueued(id); ok {
		if !found {
			return scache.Entry{}, scache.ErrNotFound
		}
		return e, nil
	}
	var e scache.Entry
	damaged := false
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			k := stringBytes(id)
			v := tx.Bucket(bucketEntries).Get(k)
			if v == nil {
				return scache.ErrNotFound
			}
			nanos, session, ok := decodeValue(k, v)
			if !ok {
				damaged = true
				return scache.ErrNotFound
			}
			e = scache.Entry{Written: time.Unix(0, nanos), Session: bytes.Clone(session)}
			if e.Session == nil {
				e.Session = []byte{}
			}
			return nil
		})
	})
	if damaged {
		s.dropDamaged(ctx, id)
	}
	return e, err
}

// Put stores e under id, then evicts the oldest-written entries (possibly
// e itself) while the limits are exceeded.
func (s *Store) Put(ctx context.Context, id string, e scache.Entry) error {
	size := scache.Size(id, e.Session)
	if size > s.lim.Load().MaxBytes {
		return scache.ErrTooLarge
	}
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("boltstore: id of %d bytes", len(id))
	}
	if len(e.Session) > bolt.MaxValueSize-valueHeaderLen {
		return scache.ErrTooLarge // bbolt would reject it at every retry
	}
	if e.Written.Before(minWritten) || e.Written.After(maxWritten) {
		return errWrittenRange
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.enqueue(&queuedWrite{id: id, value: encodeValue(id, e.Written.UnixNano(), e.Session), size: size})
}

// Delete removes the entry for id and reports whether there was one.
func (s *Store) Delete(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// Whether it is there, and the queueing of its removal, must not be
	// separated by another write of the same id.
	s.deleteMu.Lock()
	defer s.deleteMu.Unlock()
	found := false
	if q, ok := s.queued(id); ok {
		found = q.value != nil
	} else {
		err := s.run(ctx, func(db *bolt.DB) error {
			return db.View(func(tx *bolt.Tx) error {
				found = tx.Bucket(bucketEntries).Get(stringBytes(id)) != nil
				return nil
			})
		})
		if err != nil {
			return false, err
		}
	}
	if !found {
		return false, nil
	}
	return true, s.enqueue(&queuedWrite{id: id})
}

// Expire removes up to max entries written before cutoff, oldest first,
// in one transaction.
func (s *Store) Expire(ctx context.Context, cutoff time.Time, max int, visit func(session []byte)) (removed int, more bool, err error) {
	// The sweep sees every earlier write, except while commits fail: then
	// the file is swept as it is, which may free pages the retry needs.
	if err := s.Commit(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return 0, false, err
	}
	var limit [writtenLen]byte
	switch {
	case cutoff.After(maxWritten):
		copy(limit[:], bytes.Repeat([]byte{0xFF}, writtenLen))
	case !cutoff.Before(minWritten):
		putWritten(limit[:], cutoff.UnixNano())
	}
	expired := func(ikey []byte) bool {
		return ikey != nil && bytes.Compare(ikey[:min(len(ikey), writtenLen)], limit[:]) < 0
	}
	err = s.update(ctx, func(w *write) error {
		removed, more = 0, false
		for {
			ikey, id, v := w.oldest()
			if !expired(ikey) {
				return nil
			}
			if removed >= max {
				more = true
				return nil
			}
			if v == nil {
				if err := w.expiry.Delete(ikey); err != nil {
					return err
				}
				continue
			}
			if _, session, ok := decodeValue(id, v); ok && visit != nil {
				callVisit(visit, session)
			}
			if err := w.remove(id, v); err != nil {
				return err
			}
			removed++
		}
	})
	if err != nil {
		return 0, false, err
	}
	return removed, more, nil
}

// Each lists the entries in the file, after committing what is queued.
// One read transaction: writers go on meanwhile (bbolt's MVCC).
func (s *Store) Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error {
	if err := s.Commit(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return err
	}
	return s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEntries).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				nanos, session, ok := decodeValue(k, v)
				if !ok {
					continue // dropped when looked up
				}
				if !visit(string(k), time.Unix(0, nanos), len(session)) || ctx.Err() != nil {
					break
				}
			}
			return ctx.Err()
		})
	})
}

// Stats reports the entry count and bytes (kept in the file), the
// evictions since Open, and what became of acknowledged changes. While
// commits fail, the counts are those of the file, without the backlog.
func (s *Store) Stats(ctx context.Context) (scache.StoreStats, error) {
	if err := s.Commit(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return scache.StoreStats{}, err
	}
	var c counts
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			c, _ = decodeCounts(tx.Bucket(bucketMeta).Get(keyCounts))
			return nil
		})
	})
	st := scache.StoreStats{Entries: int(c.entries), Bytes: c.bytes, Evictions: s.evictions.Load()}
	s.writeStats(&st)
	return st, err
}

// SetLimits bounds the store by lim from now on. A
// smaller bound evicts the oldest-written entries at once, down to it, a
// bounded number per transaction; writes still queued are held to it when
// they are committed.
func (s *Store) SetLimits(ctx context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("boltstore: invalid limits %+v", lim)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.lim.Store(&lim)
	return s.trimToLimits()
}

// Limits are the store's current bounds.
func (s *Store) Limits() scache.Limits { return *s.lim.Load() }

// CollectMetrics emits the file's damage and recovery counts.
func (s *Store) CollectMetrics(_ context.Context, emit metrics.Emit) {
	emit.Counter(metrics.Desc{Name: "cache_file_damaged_entries", Help: "Entries of the cache file that failed their checksum and were dropped."}, s.damaged.Load())
	emit.Counter(metrics.Desc{Name: "cache_file_resets", Help: "Times the cache file was started over after damage found while running."}, s.resets.Load())
	emit.Counter(metrics.Desc{Name: "cache_file_set_aside", Help: "Cache files moved aside at start-up as damaged or untrusted."}, s.setAside.Load())
}

// damageCounts reports how many entries failed their checksum since Open, and
// how many times the file was started over after damage.
func (s *Store) damageCounts() (entries, resets uint64) {
	return s.damaged.Load(), s.resets.Load()
}

// What the cache and the daemon use beyond scache.Store.
var (
	_ scache.Committer        = (*Store)(nil)
	_ scache.MetricsCollector = (*Store)(nil)
)

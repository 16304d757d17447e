package boltstore

// The write transaction: a bbolt transaction with the entry count and
// byte total it keeps, and the Put, Delete and eviction steps made in it.

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"
)

// write is one write transaction with the counters it maintains.
type write struct {
	entries, expiry, meta *bolt.Bucket
	c, before             counts
	evicted               int
}

func beginWrite(tx *bolt.Tx) *write {
	w := &write{entries: tx.Bucket(bucketEntries), expiry: tx.Bucket(bucketExpiry), meta: tx.Bucket(bucketMeta)}
	// Keys are mostly appended in time order and deleted from the front.
	w.expiry.FillPercent = 0.9
	w.c, _ = decodeCounts(w.meta.Get(keyCounts))
	w.before = w.c
	return w
}

func (w *write) finish() error {
	if w.c == w.before {
		return nil
	}
	return w.meta.Put(keyCounts, w.c.encode())
}

// remove deletes entry id, whose stored value is v, and its index key.
func (w *write) remove(id, v []byte) error {
	if err := w.entries.Delete(id); err != nil {
		return err
	}
	return w.unindex(id, v)
}

// unindex deletes the index key of entry id, whose stored value is v, and
// takes it out of the counts: what remove does besides deleting the entry,
// which a Put of the same id replaces in place instead.
func (w *write) unindex(id, v []byte) error {
	if len(v) >= writtenLen {
		if err := w.expiry.Delete(expiryKey(v, id)); err != nil {
			return err
		}
	}
	w.c.entries = max(w.c.entries-1, 0)
	w.c.bytes = max(w.c.bytes-storedSize(id, v), 0)
	return nil
}

// oldest returns the first index key and the entry it names. v is nil for
// an index key with no matching entry, which the caller drops.
func (w *write) oldest() (ikey, id, v []byte) {
	k, _ := w.expiry.Cursor().First()
	if k == nil {
		return nil, nil, nil
	}
	ikey = bytes.Clone(k)
	if len(ikey) <= writtenLen {
		return ikey, nil, nil
	}
	id = ikey[writtenLen:]
	v = w.entries.Get(id)
	if len(v) < writtenLen || !bytes.Equal(v[:writtenLen], ikey[:writtenLen]) {
		return ikey, id, nil
	}
	return ikey, id, v
}

// evictOldest removes the oldest entry; false if there is none.
func (w *write) evictOldest() bool {
	for {
		ikey, id, v := w.oldest()
		if ikey == nil {
			return false
		}
		if v == nil {
			_ = w.expiry.Delete(ikey)
			continue
		}
		if w.remove(id, v) != nil {
			return false
		}
		w.evicted++
		return true
	}
}

// applyPut stores value v under id k in w, then evicts the oldest-written
// entries (possibly this one) while the limits are exceeded.
func (s *Store) applyPut(w *write, k, v []byte, size int64) error {
	if old := w.entries.Get(k); old != nil {
		if err := w.unindex(k, old); err != nil {
			return err
		}
	}
	if err := w.entries.Put(k, v); err != nil { // replaces old in place
		return err
	}
	if err := w.expiry.Put(expiryKey(v, k), []byte{}); err != nil {
		return err
	}
	w.c.entries++
	w.c.bytes += size
	lim := s.lim.Load()
	for w.c.entries > int64(lim.MaxEntries) || w.c.bytes > lim.MaxBytes {
		if !w.evictOldest() {
			break
		}
	}
	return nil
}

// applyDelete removes id k from w and reports whether it was there.
func applyDelete(w *write, k []byte) (bool, error) {
	v := w.entries.Get(k)
	if v == nil {
		return false, nil
	}
	return true, w.remove(k, v)
}

// update runs apply in one write transaction and counts what it evicted.
// Its callers, the committer and Expire, take turns on bbolt's writer
// lock.
func (s *Store) update(ctx context.Context, apply func(*write) error) error {
	evicted := 0
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			w := beginWrite(tx)
			if err := apply(w); err != nil {
				return err
			}
			evicted = w.evicted
			return w.finish()
		})
	})
	if err == nil {
		s.evictions.Add(uint64(evicted))
	}
	return err
}

// trimToLimits evicts, a bounded number per transaction, what exceeds
// limits smaller than those the file was filled under.
func (s *Store) trimToLimits() error {
	for {
		done := false
		err := s.update(context.Background(), func(w *write) error {
			lim := s.lim.Load()
			for range 1000 {
				if w.c.entries <= int64(lim.MaxEntries) && w.c.bytes <= lim.MaxBytes || !w.evictOldest() {
					done = true
					break
				}
			}
			return nil
		})
		if err != nil || done {
			return err
		}
	}
}

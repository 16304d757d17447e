// Package memstore is the in-memory session cache store: a map for lookups
// and a min-heap on write time, so that both eviction of the entries
// closest to expiry and the expiry sweep touch only the oldest entries.
package memstore

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

type item struct {
	id      string
	written time.Time
	session []byte
	seq     uint64 // write order: among equal times the older write goes first
	index   int    // position in the heap
}

// Store is a bounded in-memory scache.Store.
type Store struct {
	mu        sync.Mutex
	lim       scache.Limits // changed by SetLimits
	items     map[string]*item
	byAge     ageHeap
	bytes     int64
	evictions uint64
	writes    uint64
}

// New returns an empty store bounded by lim.
func New(lim scache.Limits) *Store {
	return &Store{lim: lim, items: make(map[string]*item)}
}

func (s *Store) Get(_ context.Context, id string) (scache.Entry, error) {
	s.mu.Lock()
	it, ok := s.items[id]
	if !ok {
		s.mu.Unlock()
		return scache.Entry{}, scache.ErrNotFound
	}
	e := scache.Entry{Written: it.written, Session: append([]byte(nil), it.session...)}
	s.mu.Unlock()
	return e, nil
}

func (s *Store) Put(_ context.Context, id string, e scache.Entry) error {
	size := scache.Size(id, e.Session)
	session := append([]byte(nil), e.Session...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if size > s.lim.MaxBytes {
		clear(session)
		return scache.ErrTooLarge
	}
	s.writes++
	if it, ok := s.items[id]; ok {
		s.bytes += size - scache.Size(id, it.session)
		clear(it.session)
		it.session, it.written, it.seq = session, e.Written, s.writes
		heap.Fix(&s.byAge, it.index)
	} else {
		it := &item{id: id, written: e.Written, session: session, seq: s.writes}
		s.items[id] = it
		heap.Push(&s.byAge, it)
		s.bytes += size
	}
	s.evictLocked()
	return nil
}

// evictLocked removes the oldest-written entries while the bounds are
// exceeded; s.mu is held.
func (s *Store) evictLocked() {
	for len(s.byAge) > 0 && (len(s.items) > s.lim.MaxEntries || s.bytes > s.lim.MaxBytes) {
		s.remove(s.byAge[0])
		s.evictions++
	}
}

// SetLimits bounds the store by lim from now on; a smaller bound evicts
// the oldest-written entries at once, down to it.
func (s *Store) SetLimits(_ context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("memstore: invalid limits %+v", lim)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lim = lim
	s.evictLocked()
	return nil
}

// Limits are the store's current bounds.
func (s *Store) Limits() scache.Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lim
}

func (s *Store) Delete(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[id]
	if ok {
		s.remove(it)
	}
	return ok, nil
}

func (s *Store) Expire(_ context.Context, cutoff time.Time, max int, visit func([]byte)) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for len(s.byAge) > 0 && s.byAge[0].written.Before(cutoff) {
		if n == max {
			return n, true, nil
		}
		it := s.byAge[0]
		if visit != nil {
			visit(it.session)
		}
		s.remove(it)
		n++
	}
	return n, false, nil
}

func (s *Store) Stats(context.Context) (scache.StoreStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return scache.StoreStats{Entries: len(s.items), Bytes: s.bytes, Evictions: s.evictions}, nil
}

// Close wipes every session.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.items {
		clear(it.session)
	}
	s.items, s.byAge, s.bytes = map[string]*item{}, nil, 0
	return nil
}

// remove deletes it from both indexes and wipes its bytes; s.mu is held.
func (s *Store) remove(it *item) {
	heap.Remove(&s.byAge, it.index)
	delete(s.items, it.id)
	s.bytes -= scache.Size(it.id, it.session)
	clear(it.session)
}

type ageHeap []*item

func (h ageHeap) Len() int { return len(h) }
func (h ageHeap) Less(i, j int) bool {
	if h[i].written.Equal(h[j].written) {
		return h[i].seq < h[j].seq
	}
	return h[i].written.Before(h[j].written)
}
func (h ageHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *ageHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *ageHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

// Each lists the entries, oldest first is not promised; the lock is held
// while visit runs, so visit must be quick.
func (s *Store) Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, it := range s.items {
		if !visit(id, it.written, len(it.session)) {
			break
		}
	}
	return ctx.Err()
}

var _ scache.Store = (*Store)(nil)

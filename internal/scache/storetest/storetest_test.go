package storetest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// modelStore is the suite's own model behind a mutex: the suite must pass
// against it, or the suite is wrong.
type modelStore struct {
	mu sync.Mutex
	m  model
}

func (s *modelStore) Get(_ context.Context, id string) (scache.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m.entries[id]
	if !ok {
		return scache.Entry{}, scache.ErrNotFound
	}
	return scache.Entry{Written: e.Written, Session: bytes.Clone(e.Session)}, nil
}

func (s *modelStore) Put(_ context.Context, id string, e scache.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.put(id, scache.Entry{Written: e.Written, Session: bytes.Clone(e.Session)})
}

func (s *modelStore) Delete(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m.entries[id]
	if ok {
		s.m.remove(id)
	}
	return ok, nil
}

func (s *modelStore) Expire(_ context.Context, cutoff time.Time, max int, visit func([]byte)) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// model.expire reports the sessions it removed; visit sees them in order.
	removed, more := s.m.expire(cutoff, max)
	if visit != nil {
		for _, session := range removed {
			visit([]byte(session))
		}
	}
	return len(removed), more, nil
}

func (s *modelStore) SetLimits(_ context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("modelStore: invalid limits %+v", lim)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.lim = lim
	for _, old := range s.m.byAge() {
		if len(s.m.entries) <= lim.MaxEntries && s.m.bytes <= lim.MaxBytes {
			break
		}
		s.m.remove(old)
		s.m.evictions++
	}
	return nil
}

func (s *modelStore) Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error {
	type item struct {
		id      string
		written time.Time
		size    int
	}
	s.mu.Lock()
	items := make([]item, 0, len(s.m.entries))
	for _, id := range s.m.byAge() {
		e := s.m.entries[id]
		items = append(items, item{id, e.Written, len(e.Session)})
	}
	s.mu.Unlock()
	for _, it := range items {
		if !visit(it.id, it.written, it.size) || ctx.Err() != nil {
			break
		}
	}
	return ctx.Err()
}

func (s *modelStore) Stats(context.Context) (scache.StoreStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return scache.StoreStats{Entries: len(s.m.entries), Bytes: s.m.bytes, Evictions: s.m.evictions}, nil
}

func (s *modelStore) Close() error { return nil }

func TestModelStorePasses(t *testing.T) {
	Run(t, func(t *testing.T, lim scache.Limits) scache.Store {
		return &modelStore{m: model{lim: lim, entries: map[string]scache.Entry{}}}
	})
}

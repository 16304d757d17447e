package storetest

import (
	"bytes"
	"context"
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

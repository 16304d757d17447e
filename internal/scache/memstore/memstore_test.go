package memstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/storetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, lim scache.Limits) scache.Store { return New(lim) })
}

func put(t *testing.T, s *Store, id string, written time.Time, session string) {
	t.Helper()
	if err := s.Put(ctx, id, scache.Entry{Written: written, Session: []byte(session)}); err != nil {
		t.Fatalf("Put(%q): %v", id, err)
	}
}

func has(t *testing.T, s *Store, id string) bool {
	t.Helper()
	_, err := s.Get(ctx, id)
	switch {
	case err == nil:
		return true
	case errors.Is(err, scache.ErrNotFound):
		return false
	}
	t.Fatalf("Get(%q): %v", id, err)
	return false
}

func wantPresent(t *testing.T, s *Store, present, absent []string) {
	t.Helper()
	for _, id := range present {
		if !has(t, s, id) {
			t.Errorf("%q was evicted, want it kept", id)
		}
	}
	for _, id := range absent {
		if has(t, s, id) {
			t.Errorf("%q is still there, want it evicted", id)
		}
	}
}

// Entries written at the same instant leave in the order they were
// written; rewriting an entry makes it the newest.
func TestEqualTimesEvictInInsertionOrder(t *testing.T) {
	s := New(scache.Limits{MaxEntries: 3, MaxBytes: 1 << 20})
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	for _, id := range []string{"a", "b", "c"} {
		put(t, s, id, t0, "x")
	}
	put(t, s, "d", t0, "x")
	wantPresent(t, s, []string{"b", "c", "d"}, []string{"a"})

	put(t, s, "b", t0, "y") // a rewrite: b is now the newest write
	put(t, s, "e", t0, "x")
	wantPresent(t, s, []string{"b", "d", "e"}, []string{"a", "c"})

	put(t, s, "f", t0, "x")
	wantPresent(t, s, []string{"b", "e", "f"}, []string{"d"})

	if st, _ := s.Stats(ctx); st.Evictions != 3 || st.Entries != 3 {
		t.Errorf("Stats = %+v, want 3 entries and 3 evictions", st)
	}
}

// The byte bound evicts in the same order.
func TestEqualTimesEvictInInsertionOrderBytes(t *testing.T) {
	one := scache.Size("a", []byte("xxxx"))
	s := New(scache.Limits{MaxEntries: 100, MaxBytes: 3 * one})
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	for _, id := range []string{"c", "a", "b", "d"} {
		put(t, s, id, t0, "xxxx")
	}
	wantPresent(t, s, []string{"a", "b", "d"}, []string{"c"})
}

// Expire visits equal times in write order too.
func TestExpireEqualTimesInInsertionOrder(t *testing.T) {
	s := New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20})
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	for _, id := range []string{"z", "y", "x", "w"} {
		put(t, s, id, t0, id)
	}
	var seen []string
	n, more, err := s.Expire(ctx, t0.Add(time.Second), 3, func(b []byte) { seen = append(seen, string(b)) })
	if err != nil || n != 3 || !more {
		t.Fatalf("Expire = %d, %v, %v; want 3, true, nil", n, more, err)
	}
	if got := strings.Join(seen, ","); got != "z,y,x" {
		t.Errorf("Expire visited %q, want z, y, x in that order", seen)
	}
	wantPresent(t, s, []string{"w"}, []string{"z", "y", "x"})
}

// Close zeroes every session the store held, and leaves it empty.
func TestCloseWipes(t *testing.T) {
	s := New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20})
	t0 := time.Unix(1_700_000_000, 0)
	mine := []byte("caller's session bytes")
	if err := s.Put(ctx, "a", scache.Entry{Written: t0, Session: mine}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "b", t0, "another secret session")
	held := map[string][]byte{}
	s.mu.Lock()
	for id, it := range s.items {
		held[id] = it.session
	}
	s.mu.Unlock()
	if len(held) != 2 {
		t.Fatalf("store holds %d entries, want 2", len(held))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for id, b := range held {
		if len(b) == 0 || !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("after Close the session of %q is %q, want zeroes", id, b)
		}
	}
	if string(mine) != "caller's session bytes" {
		t.Errorf("Close wiped the caller's buffer: %q", mine)
	}
	if has(t, s, "a") || has(t, s, "b") {
		t.Error("entries still found after Close")
	}
	if st, _ := s.Stats(ctx); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("Stats after Close = %+v, want empty", st)
	}
}

// Delete, eviction, replacement and Expire wipe what they drop.
func TestDroppedSessionsAreWiped(t *testing.T) {
	s := New(scache.Limits{MaxEntries: 2, MaxBytes: 1 << 20})
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	held := func(id string) []byte {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.items[id].session
	}
	zero := func(what string, b []byte) {
		t.Helper()
		if len(b) == 0 || !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("%s: dropped session is %q, want zeroes", what, b)
		}
	}

	put(t, s, "del", t0, "secret-1")
	b := held("del")
	if ok, err := s.Delete(ctx, "del"); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	zero("Delete", b)

	put(t, s, "rep", t0, "secret-2")
	b = held("rep")
	put(t, s, "rep", t0.Add(time.Second), "secret-3")
	zero("replace", b)

	put(t, s, "old", t0.Add(-time.Hour), "secret-4")
	b = held("old")
	put(t, s, "new", t0.Add(time.Hour), "secret-5")
	if has(t, s, "old") {
		t.Fatal("oldest entry was not evicted")
	}
	zero("eviction", b)

	b = held("rep")
	var visited string
	if n, _, err := s.Expire(ctx, t0.Add(time.Minute), 10, func(v []byte) { visited = string(v) }); n != 1 || err != nil {
		t.Fatalf("Expire = %d, %v", n, err)
	}
	if visited != "secret-3" {
		t.Errorf("Expire visited %q, want the session before the wipe", visited)
	}
	zero("Expire", b)
}

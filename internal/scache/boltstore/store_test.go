package boltstore

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/storetest"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, lim scache.Limits) scache.Store {
		s, err := Open(filepath.Join(t.TempDir(), "cache.db"), lim, Options{Logger: failOnWarn(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// failOnWarn fails a test that expects no warning.
func failOnWarn(t testing.TB) *slog.Logger { return testlog.FailOnWarn(t) }

// A panic in the caller's visit function reaches the caller, is not taken
// for damage, and leaves the store usable (the committer moves on).
func TestVisitPanic(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "cache.db"), scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := time.Now().Add(-time.Hour)
	for _, id := range []string{"a", "b"} {
		if err := s.Put(ctx, id, scache.Entry{Written: old, Session: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		s.Expire(ctx, time.Now(), 10, func([]byte) { panic("boom") })
	}()
	if _, resets := s.damageCounts(); resets != 0 {
		t.Error("a caller's panic was taken for damage")
	}
	if st, _ := s.Stats(ctx); st.Entries != 2 {
		t.Errorf("the panicking Expire was committed: %+v", st)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Put(ctx, "c", scache.Entry{Written: time.Now(), Session: []byte("c")}); err != nil {
			t.Error(err)
		}
		if n, _, err := s.Expire(ctx, time.Now().Add(-time.Minute), 10, nil); n != 2 || err != nil {
			t.Errorf("Expire = %d, %v", n, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers stuck after a panic in visit")
	}
}

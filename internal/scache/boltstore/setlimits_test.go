package boltstore

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestSetLimitsQueuedAndConcurrent: writes still queued when the bound
// shrinks are held to it when committed, SetLimits is safe with Puts and
// Gets running, and the file keeps what it holds across a reopen.
func TestSetLimitsQueuedAndConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	lim := scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 24}
	s, err := Open(path, lim, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	for i := range 100 {
		if err := s.Put(ctx, fmt.Sprint("q", i), scache.Entry{Written: base.Add(time.Duration(i) * time.Millisecond), Session: []byte("s")}); err != nil {
			t.Fatal(err)
		}
	}
	// Some of those may still be queued.
	if err := s.SetLimits(ctx, scache.Limits{MaxEntries: 10, MaxBytes: 1 << 24}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Entries != 10 || st.Evictions != 90 {
		t.Fatalf("after SetLimits: %+v, %v; want 10 entries, 90 evictions", st, err)
	}
	for i := 90; i < 100; i++ {
		if _, err := s.Get(ctx, fmt.Sprint("q", i)); err != nil {
			t.Errorf("newest entry q%d: %v", i, err)
		}
	}
	if got := s.Limits(); got.MaxEntries != 10 {
		t.Errorf("Limits() = %+v", got)
	}

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("c%d-%d", w, i)
				if err := s.Put(ctx, id, scache.Entry{Written: time.Now(), Session: []byte("s")}); err != nil {
					t.Error(err)
					return
				}
				s.Get(ctx, id)
			}
		})
	}
	for n := range 20 {
		if err := s.SetLimits(ctx, scache.Limits{MaxEntries: 5 + n%7, MaxBytes: 1 << 24}); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if err := s.SetLimits(ctx, scache.Limits{MaxEntries: 4, MaxBytes: 1 << 24}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stats(ctx); err != nil || st.Entries != 4 {
		t.Fatalf("after the last SetLimits: %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, lim, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := s.Stats(ctx); err != nil || st.Entries != 4 {
		t.Errorf("reopened: %+v, %v; want the 4 entries", st, err)
	}
}

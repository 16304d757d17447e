package boltstore

import (
	"errors"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestRestartWithSmallerByteBound: a file filled under a large byte bound
// and reopened with a smaller one (and room for every entry) is trimmed
// at Open, oldest first, to within the new bound.
func TestRestartWithSmallerByteBound(t *testing.T) {
	path := filledFile(t, 100) // 300-byte sessions
	size := scache.Size(benchID(0), benchSession(0, 300))
	lim := scache.Limits{MaxEntries: 10_000, MaxBytes: 40 * size}
	s, err := Open(path, lim, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.Stats(ctx)
	if st.Bytes > lim.MaxBytes || st.Entries != 40 || st.Evictions != 60 {
		t.Errorf("Stats = %+v, want 40 entries in at most %d bytes after 60 evictions", st, lim.MaxBytes)
	}
	if st.Bytes != int64(st.Entries)*size {
		t.Errorf("Bytes = %d for %d entries of %d bytes", st.Bytes, st.Entries, size)
	}
	if _, err := s.Get(ctx, benchID(59)); !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("an old entry survived: %v", err)
	}
	if _, err := s.Get(ctx, benchID(60)); err != nil {
		t.Errorf("a new entry was evicted: %v", err)
	}
}

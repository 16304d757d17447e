package boltstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/scache"
)

// benchID is a cache id shaped like smtpd's: a hex session id and a suffix.
func benchID(i int) string {
	h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
	return fmt.Sprintf("%x&s=smtp&l=805306672", h[:16])
}

func benchSession(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i + j)
	}
	return b
}

func openBench(b testing.TB, path string, lim scache.Limits) *Store {
	b.Helper()
	s, err := Open(path, lim, Options{Logger: failOnWarn{b}})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// fill puts n entries of size-byte sessions, written one microsecond apart
// from start, in transactions of batch entries (fast set-up for tests).
func fill(b testing.TB, s *Store, n, size int, start time.Time) {
	b.Helper()
	for i := range n {
		err := s.Put(ctx, benchID(i), scache.Entry{Written: start.Add(time.Duration(i) * time.Microsecond), Session: benchSession(i, size)})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	const keep = 100_000
	s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), scache.Limits{MaxEntries: keep, MaxBytes: 1 << 30})
	defer s.Close()
	session := benchSession(0, 512)
	start := time.Now()
	b.SetBytes(512)
	b.ResetTimer()
	for i := range b.N {
		// New ids: once the store is full every Put also evicts one.
		if err := s.Put(ctx, benchID(i), scache.Entry{Written: start.Add(time.Duration(i)), Session: session}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	const n = 100_000
	s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), scache.Limits{MaxEntries: n, MaxBytes: 1 << 30})
	defer s.Close()
	fill(b, s, n, 512, time.Now())
	ids := make([]string, n)
	for i := range ids {
		ids[i] = benchID(i)
	}
	b.SetBytes(512)
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Get(ctx, ids[i%n]); err != nil {
			b.Fatal(err)
		}
	}
}

package boltstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
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
	s, err := Open(path, lim, Options{Logger: failOnWarn(b)})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

const benchEntries = 100_000

// BenchmarkPut measures single-writer updates of 512-byte sessions into a
// store holding 100,000 entries: new ids with room to spare, new ids into
// a full store (each Put also evicts the oldest), and replacements.
func BenchmarkPut(b *testing.B) {
	for _, mode := range []string{"new", "evicting", "replace"} {
		b.Run(mode, func(b *testing.B) {
			lim := scache.Limits{MaxEntries: 10 * benchEntries, MaxBytes: 1 << 32}
			if mode == "evicting" {
				lim.MaxEntries = benchEntries
			}
			s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), lim)
			defer s.Close()
			start := time.Now()
			bulkFill(b, s, 0, benchEntries, 512, start)
			session := benchSession(0, 512)
			b.SetBytes(512)
			b.ResetTimer()
			for i := range b.N {
				n := benchEntries + i
				if mode == "replace" {
					n = i % benchEntries
				}
				if err := s.Put(ctx, benchID(n), scache.Entry{Written: start.Add(time.Duration(benchEntries+i) * time.Microsecond), Session: session}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPutParallel shows the write-behind: concurrent writers share
// transactions.
func BenchmarkPutParallel(b *testing.B) {
	s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), scache.Limits{MaxEntries: 10 * benchEntries, MaxBytes: 1 << 32})
	defer s.Close()
	start := time.Now()
	bulkFill(b, s, 0, benchEntries, 512, start)
	session := benchSession(0, 512)
	var next atomic.Int64
	next.Store(benchEntries)
	b.SetBytes(512)
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := int(next.Add(1))
			if err := s.Put(ctx, benchID(n), scache.Entry{Written: start.Add(time.Duration(n) * time.Microsecond), Session: session}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGet measures lookups of 512-byte sessions among 100,000.
func BenchmarkGet(b *testing.B) {
	s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), scache.Limits{MaxEntries: benchEntries, MaxBytes: 1 << 32})
	defer s.Close()
	bulkFill(b, s, 0, benchEntries, 512, time.Now())
	ids := make([]string, benchEntries)
	for i := range ids {
		ids[i] = benchID(i)
	}
	b.SetBytes(512)
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Get(ctx, ids[(i*7919)%benchEntries]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommit measures what bounds the file store under writes: the
// committer's transaction, replacing batch random entries of 512 bytes
// at a time in a store of 2,000 or 100,000, reported per write. Each
// replacement rewrites the entry's leaf page and its old index key's
// page, so a write costs about two page copies and two pwrite(2)s,
// whatever the batch; a larger batch shares only the branch pages.
func BenchmarkCommit(b *testing.B) {
	session := benchSession(1, 512)
	for _, n := range []int{2000, benchEntries} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := openBench(b, filepath.Join(b.TempDir(), "cache.db"), scache.Limits{MaxEntries: 10 * n, MaxBytes: 1 << 34})
			defer s.Close()
			start := time.Now()
			bulkFill(b, s, 0, n, 512, start)
			next := 0
			for _, batch := range []int{1, 8, 64, 512} {
				b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
					b.SetBytes(512)
					for done := 0; done < b.N; done += batch {
						err := s.update(ctx, func(w *write) error {
							for i := 0; i < min(batch, b.N-done); i++ {
								next++
								id := benchID((next * 7919) % n)
								v := encodeValue(id, start.Add(time.Duration(n+next)*time.Microsecond).UnixNano(), session)
								if err := s.applyPut(w, []byte(id), v, scache.Size(id, session)); err != nil {
									return err
								}
							}
							return nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

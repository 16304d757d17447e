package boltstore

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// bulkFill adds entries ids first..first+n-1 with size-byte sessions,
// written one microsecond apart from start, many per transaction: the
// same bookkeeping as Put without its per-call commit, to build large
// files quickly. The store must have room (no eviction here).
func bulkFill(t testing.TB, s *Store, first, n, size int, start time.Time) {
	t.Helper()
	const perTx = 20_000
	for lo := first; lo < first+n; lo += perTx {
		hi := min(lo+perTx, first+n)
		err := s.run(ctx, func(db *bolt.DB) error {
			return db.Update(func(tx *bolt.Tx) error {
				w := beginWrite(tx)
				for i := lo; i < hi; i++ {
					id := benchID(i)
					v := encodeValue(id, start.Add(time.Duration(i)*time.Microsecond).UnixNano(), benchSession(i, size))
					if err := w.entries.Put([]byte(id), v); err != nil {
						return err
					}
					if err := w.expiry.Put(expiryKey(v, []byte(id)), []byte{}); err != nil {
						return err
					}
					w.c.entries++
					w.c.bytes += scache.Size(id, v[valueHeaderLen:])
				}
				return w.finish()
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fullCount counts what is really in the file, checking every entry the
// way Open does, for comparison with Stats.
func fullCount(t testing.TB, s *Store) (entries int, byteCount int64) {
	t.Helper()
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error { return checkContents(tx, s.boot) })
	})
	if err != nil {
		t.Fatalf("file contents: %v", err)
	}
	err = s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
				entries++
				byteCount += storedSize(k, v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, byteCount
}

// rssAnon reads RssAnon (bytes) from /proc/self/status.
func rssAnon(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssAnon in /proc/self/status")
	return 0
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

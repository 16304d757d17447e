package boltstore

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// bigFile makes a cleanly closed file large enough to be checked in two
// halves at Open, and returns its smallest and largest ids.
func bigFile(t *testing.T) (path, first, last string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, scache.Limits{MaxEntries: 10 * splitEntries, MaxBytes: 1 << 30})
	bulkFill(t, s, 0, splitEntries+5000, 64, time.Now().Add(-time.Minute))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		k, _ := c.First()
		first = string(k)
		k, _ = c.Last()
		last = string(k)
		if mid := splitKey(tx.Bucket(bucketExpiry)); mid == nil || bytes.Compare(mid, k) >= 0 || bytes.Compare(mid, []byte(first)) <= 0 {
			t.Errorf("split key %q is not inside [%q, %q]", mid, first, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path, first, last
}

// TestOpenBigFileInHalves: a file checked in two halves of its keys is
// counted whole, and a damaged entry in either half is found.
func TestOpenBigFileInHalves(t *testing.T) {
	withBootID(t, "boot-1") // same boot: only the damage may be refused
	path, first, last := bigFile(t)
	s, err := Open(path, scache.Limits{MaxEntries: 10 * splitEntries, MaxBytes: 1 << 30}, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stats(ctx); err != nil || st.Entries != splitEntries+5000 {
		t.Errorf("Stats = %+v, %v; want %d entries", st, err, splitEntries+5000)
	}
	for _, id := range []string{first, last} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("Get(%q): %v", id, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, half := range []struct{ name, reason string }{
		{"first half", "fails its checksum"},
		{"second half", "of the second half fails its checksum"},
	} {
		t.Run(half.name, func(t *testing.T) {
			path, first, last := bigFile(t)
			id := first
			if half.name == "second half" {
				id = last
			}
			editFile(t, path, func(tx *bolt.Tx) error {
				e := tx.Bucket(bucketEntries)
				v := bytes.Clone(e.Get([]byte(id)))
				v[len(v)-1] ^= 1
				return e.Put([]byte(id), v)
			})
			wantMovedAside(t, path, half.reason)
		})
	}
}

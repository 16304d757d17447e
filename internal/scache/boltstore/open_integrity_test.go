package boltstore

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// twoEntryFile makes a cleanly closed file holding ids a and b, written at
// the same instant, with different sessions.
func twoEntryFile(t *testing.T, a, b string, written time.Time) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	for _, id := range []string{a, b} {
		if err := s.Put(ctx, id, scache.Entry{Written: written, Session: []byte("session of " + id)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// editFile changes the file with bbolt directly, as damage or a foreign
// writer would.
func editFile(t *testing.T, path string, edit func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesValueUnderAnotherID: two stored values swapped between
// their keys (same id length, same write time, so the index and the
// counters still agree) fail their checksums, which cover the id: the
// file is moved aside, and no lookup ever gets another id's session.
func TestOpenRefusesValueUnderAnotherID(t *testing.T) {
	withBootID(t, "boot-1") // same boot: the edit alone must be what is refused
	const a, b = "id-aaaa", "id-bbbb"
	path := twoEntryFile(t, a, b, time.Now().Add(-time.Minute))
	editFile(t, path, func(tx *bolt.Tx) error {
		e := tx.Bucket(bucketEntries)
		va, vb := append([]byte(nil), e.Get([]byte(a))...), append([]byte(nil), e.Get([]byte(b))...)
		if err := e.Put([]byte(a), vb); err != nil {
			return err
		}
		return e.Put([]byte(b), va)
	})
	wantMovedAside(t, path, "fails its checksum")
}

// TestOpenRefusesIndexNotMatchingEntries: an expiry index whose keys no
// longer name the entries' write times (same count, so only the pairs
// differ) is damage: the file is moved aside rather than used with an
// entry the sweep would never find.
func TestOpenRefusesIndexNotMatchingEntries(t *testing.T) {
	withBootID(t, "boot-1")
	const a, b = "id-aaaa", "id-bbbb"
	written := time.Now().Add(-time.Minute)
	path := twoEntryFile(t, a, b, written)
	editFile(t, path, func(tx *bolt.Tx) error {
		x := tx.Bucket(bucketExpiry)
		var w [writtenLen]byte
		putWritten(w[:], written.UnixNano())
		if err := x.Delete(expiryKey(w[:], []byte(a))); err != nil {
			return err
		}
		putWritten(w[:], written.Add(time.Hour).UnixNano())
		return x.Put(expiryKey(w[:], []byte(a)), []byte{})
	})
	wantMovedAside(t, path, "index matches: false")
}

// TestOpenTightensAnyGroupOrOtherAccess: a cache file readable or
// writable by its group, or by others, or of any other mode than 0600, is
// made 0600 at Open, with a warning; a 0600 file is left alone without
// one.
func TestOpenTightensAnyGroupOrOtherAccess(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, mode := range []os.FileMode{0o640, 0o660, 0o620, 0o604, 0o602, 0o610, 0o700, 0o600} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			s := openBench(t, path, smallLimits)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			rec := &testlog.Recorder{}
			s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("file of mode %v reopened: mode %v, want 0600", mode, fi.Mode().Perm())
			}
			wantWarn := 0
			if mode != 0o600 {
				wantWarn = 1
			}
			if len(rec.Lines()) != wantWarn {
				t.Fatalf("file of mode %v: %d warnings %q, want %d", mode, len(rec.Lines()), rec, wantWarn)
			}
		})
	}
}

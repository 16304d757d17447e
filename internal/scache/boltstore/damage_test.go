package boltstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

var smallLimits = scache.Limits{MaxEntries: 10_000, MaxBytes: 64 << 20}

// filledFile makes a cleanly closed file of n entries.
func filledFile(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	bulkFill(t, s, 0, n, 300, time.Now().Add(-time.Minute))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// crashClose drops the store the way a killed process would: no final
// sync, no clean marker.
func crashClose(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	s.file.Close()
	s.db, s.closed = nil, true
}

func withBootID(t *testing.T, id string) {
	old := bootID
	bootID = func() string { return id }
	t.Cleanup(func() { bootID = old })
}

// leafPages lists the leaf pages reachable in the file at path.
func leafPages(t *testing.T, path string) (pageSize int, leaves []uint64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &walker{data: data}
	if err := w.readMeta(); err != nil {
		t.Fatal(err)
	}
	if err := w.readFreelist(); err != nil {
		t.Fatal(err)
	}
	if err := w.walkTree(w.root, 0, true); err != nil {
		t.Fatal(err)
	}
	for id := uint64(2); id < w.hwm; id++ {
		off := id * uint64(w.pageSize)
		if w.seen.has(id) && ne.Uint64(data[off:]) == id && ne.Uint16(data[off+8:]) == leafPageFlag {
			leaves = append(leaves, id)
		}
	}
	return w.pageSize, leaves
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// wantMovedAside opens a file expected to be refused: Open must warn,
// leave the old file under a .corrupt- name and come up empty and usable.
// fileMetric is the value of the store's metric name, -1 if absent.
func fileMetric(s *Store, name string) float64 {
	v := -1.0
	s.CollectMetrics(ctx, func(sm metrics.Sample) {
		if sm.Name == name {
			v = sm.Value
		}
	})
	return v
}

func wantMovedAside(t *testing.T, path, reason string) {
	t.Helper()
	rec := &testlog.Recorder{}
	s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !strings.Contains(rec.String(), "moved it to "+path+".corrupt-") || !strings.Contains(rec.String(), reason) {
		t.Errorf("warnings %q do not report the move aside (%s)", rec, reason)
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Errorf("files moved aside: %v", aside)
	}
	if st, err := s.Stats(ctx); err != nil || st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("Stats = %+v, %v; want an empty store", st, err)
	}
	if got := fileMetric(s, "cache_file_set_aside"); got != 1 {
		t.Errorf("cache_file_set_aside = %v, want 1", got)
	}
	if err := s.Put(ctx, "new", scache.Entry{Written: time.Now(), Session: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The fresh file is itself fine after a restart.
	s, err = Open(path, smallLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, err := s.Get(ctx, "new"); err != nil || string(e.Session) != "fresh" {
		t.Errorf("Get after reopen = %q, %v", e.Session, err)
	}
}

func TestOpenOverwrittenLeaf(t *testing.T) {
	path := filledFile(t, 3000)
	pageSize, leaves := leafPages(t, path)
	// Bytes inside a leaf near the middle of the file: keys and values,
	// which only the checksums and the index comparison can catch.
	leaf := leaves[len(leaves)/2]
	overwrite(t, path, int64(leaf)*int64(pageSize)+300, randomBytes(64, 1))
	wantMovedAside(t, path, "checksum")
}

func TestOpenOverwrittenPageHeaders(t *testing.T) {
	path := filledFile(t, 3000)
	size := fileSize(t, path)
	overwrite(t, path, size/2-8192, randomBytes(16384, 2))
	wantMovedAside(t, path, "damaged")
}

func TestOpenOneFlippedBit(t *testing.T) {
	path := filledFile(t, 500)
	pageSize, leaves := leafPages(t, path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(leaves[len(leaves)/3])*int64(pageSize) + 1000
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x10
	f.WriteAt(b, off)
	f.Close()
	wantMovedAside(t, path, "checksum")
}

func TestOpenTruncated(t *testing.T) {
	for _, keep := range []float64{0.5, 0.99, 0.001} {
		path := filledFile(t, 3000)
		if err := os.Truncate(path, int64(float64(fileSize(t, path))*keep)); err != nil {
			t.Fatal(err)
		}
		wantMovedAside(t, path, "damaged")
	}
}

func TestOpenGarbageFiles(t *testing.T) {
	for name, content := range map[string][]byte{
		"random":   randomBytes(64<<10, 3),
		"zeros":    make([]byte, 16<<10),
		"tiny":     []byte("x"),
		"postfix":  append([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x62, 0x31, 0x05, 0}, make([]byte, 8192)...),
		"metaOnly": nil, // filled below: a bbolt file with nothing else valid
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			if name == "metaOnly" {
				good := filledFile(t, 10)
				b, _ := os.ReadFile(good)
				pageSize, _ := leafPages(t, good)
				content = append(b[:2*pageSize:2*pageSize], make([]byte, len(b)-2*pageSize)...)
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			wantMovedAside(t, path, "")
		})
	}
}

func TestOnlyNewestMovedAsideKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache[1].db") // a glob character in the name
	os.WriteFile(path+".corrupt-12345", []byte("old"), 0o600)
	os.WriteFile(path+".other", []byte("keep"), 0o600)
	os.WriteFile(path, []byte("garbage"), 0o600)
	rec := &testlog.Recorder{}
	s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	aside, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"))
	if len(aside) != 3 || !strings.Contains(rec.String(), "removed "+path+".corrupt-12345") {
		t.Errorf("files %v, warnings %q", aside, rec)
	}
}

func TestOpenForeignBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket([]byte("other"))
		return b.Put([]byte("k"), []byte("v"))
	})
	db.Close()
	wantMovedAside(t, path, "not a session cache file")
}

func TestRestartKeepsEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	written := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for i := range 50 {
		if err := s.Put(ctx, benchID(i), scache.Entry{Written: written.Add(time.Duration(i)), Session: benchSession(i, i*7)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Delete(ctx, benchID(3))
	before, _ := s.Stats(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, benchID(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	s = openBench(t, path, smallLimits)
	defer s.Close()
	after, _ := s.Stats(ctx)
	if after.Entries != before.Entries || after.Bytes != before.Bytes || after.Evictions != 0 {
		t.Errorf("Stats after restart %+v, before %+v", after, before)
	}
	for i := range 50 {
		e, err := s.Get(ctx, benchID(i))
		if i == 3 {
			if !errors.Is(err, scache.ErrNotFound) {
				t.Errorf("deleted entry came back: %v", err)
			}
			continue
		}
		if err != nil || !e.Written.Equal(written.Add(time.Duration(i))) || !bytes.Equal(e.Session, benchSession(i, i*7)) {
			t.Fatalf("entry %d after restart: %v, %v", i, e.Written, err)
		}
	}
}

func TestRestartWithSmallerLimits(t *testing.T) {
	path := filledFile(t, 100)
	lim := scache.Limits{MaxEntries: 40, MaxBytes: 1 << 20}
	s, err := Open(path, lim, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.Stats(ctx)
	if st.Entries != 40 || st.Evictions != 60 {
		t.Errorf("Stats = %+v, want 40 entries after 60 evictions", st)
	}
	if _, err := s.Get(ctx, benchID(59)); !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("an old entry survived: %v", err)
	}
	if _, err := s.Get(ctx, benchID(60)); err != nil {
		t.Errorf("a new entry was evicted: %v", err)
	}
}

func TestCrashThenSameBoot(t *testing.T) {
	withBootID(t, "boot-1")
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	bulkFill(t, s, 0, 200, 100, time.Now())
	crashClose(t, s)
	// The process died but the kernel kept every write: trust the file.
	s = openBench(t, path, smallLimits)
	defer s.Close()
	if st, _ := s.Stats(ctx); st.Entries != 200 {
		t.Errorf("Entries = %d after a process crash, want 200", st.Entries)
	}
}

func TestCrashThenReboot(t *testing.T) {
	withBootID(t, "boot-1")
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	bulkFill(t, s, 0, 200, 100, time.Now())
	crashClose(t, s)
	withBootID(t, "boot-2")
	wantMovedAside(t, path, "open when the system went down")
}

func TestCleanCloseThenReboot(t *testing.T) {
	withBootID(t, "boot-1")
	path := filledFile(t, 200)
	withBootID(t, "boot-2")
	s := openBench(t, path, smallLimits)
	defer s.Close()
	if st, _ := s.Stats(ctx); st.Entries != 200 {
		t.Errorf("Entries = %d after a clean close and a reboot, want 200", st.Entries)
	}
}

// A clean marker is only believed while no later transaction exists: a
// write after it (here by bbolt directly) means the marker may describe a
// state the disk no longer has.
func TestCleanMarkerOutdated(t *testing.T) {
	withBootID(t, "boot-1")
	path := filledFile(t, 200)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("unrelated"), []byte("x")) })
	db.Close()
	withBootID(t, "boot-2")
	wantMovedAside(t, path, "open when the system went down")
}

func TestNoBootID(t *testing.T) {
	withBootID(t, "")
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	bulkFill(t, s, 0, 10, 100, time.Now())
	crashClose(t, s)
	// Without a boot id nothing proves the machine did not restart.
	wantMovedAside(t, path, "open when the system went down")
}

func TestFileMode(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
	}
	os.Chmod(path, 0o644)
	rec := &testlog.Recorder{}
	s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v not tightened to 0600", fi.Mode().Perm())
	}
	if countWarnings(rec) != 1 {
		t.Errorf("warnings: %q", rec)
	}
}

func TestLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	s := openBench(t, path, smallLimits)
	defer s.Close()
	s.Put(ctx, "a", scache.Entry{Written: time.Now(), Session: []byte("x")})
	_, err := Open(path, smallLimits, Options{Logger: failOnWarn(t), LockTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a file in use succeeded")
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Errorf("a file in use was moved aside: %v", aside)
	}
	if _, err := s.Get(ctx, "a"); err != nil {
		t.Errorf("first store disturbed: %v", err)
	}
}

// An entry damaged while the store is open fails its checksum on Get: it
// is dropped, counted and reported as a miss, never returned.
func TestChecksumMismatchWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	rec := &testlog.Recorder{}
	s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	marker := []byte("0123456789-distinctive-session-bytes-9876543210")
	s.Put(ctx, "victim", scache.Entry{Written: time.Now(), Session: marker})
	s.Put(ctx, "bystander", scache.Entry{Written: time.Now(), Session: []byte("other")})
	if err := s.Commit(ctx); err != nil { // into the file, to damage it there
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hits := 0
	for off := bytes.Index(data, marker); off >= 0; {
		overwrite(t, path, int64(off+5), []byte{'#'})
		hits++
		next := bytes.Index(data[off+1:], marker)
		if next < 0 {
			break
		}
		off += 1 + next
	}
	if hits == 0 {
		t.Fatal("session bytes not found in the file")
	}
	if e, err := s.Get(ctx, "victim"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("Get of a damaged entry = %q, %v; want ErrNotFound", e.Session, err)
	}
	if d, _ := s.damageCounts(); d != 1 || fileMetric(s, "cache_file_damaged_entries") != 1 {
		t.Errorf("Damaged entries = %d (metric %v), want 1", d, fileMetric(s, "cache_file_damaged_entries"))
	}
	if st, _ := s.Stats(ctx); st.Entries != 1 {
		t.Errorf("Stats = %+v, want the damaged entry gone", st)
	}
	if _, err := s.Get(ctx, "bystander"); err != nil {
		t.Errorf("bystander: %v", err)
	}
	if countWarnings(rec) != 1 {
		t.Errorf("warnings: %q", rec)
	}
}

// Damage to the file while it is open (here: truncated, or pages
// overwritten, by someone else) must not crash the daemon: the store
// starts over on an empty file through its descriptor.
func TestDamageWhileOpen(t *testing.T) {
	for _, how := range []string{"truncate", "garbage"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			rec := &testlog.Recorder{}
			s, err := Open(path, smallLimits, Options{Logger: rec.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			bulkFill(t, s, 0, 3000, 300, time.Now().Add(-time.Hour))
			size := fileSize(t, path)
			switch how {
			case "truncate":
				if err := os.Truncate(path, size/3); err != nil {
					t.Fatal(err)
				}
			case "garbage":
				overwrite(t, path, 2*4096, randomBytes(int(size)-3*4096, 4))
			}
			failures := 0
			for i := range 3000 {
				var err error
				switch i % 3 {
				case 0:
					_, err = s.Get(ctx, benchID(i))
				case 1:
					err = s.Put(ctx, benchID(i), scache.Entry{Written: time.Now(), Session: []byte("x")})
				case 2:
					_, _, err = s.Expire(ctx, time.Now(), 10, nil)
				}
				if err != nil && !errors.Is(err, scache.ErrNotFound) {
					failures++
				}
			}
			t.Logf("%d failed calls; warnings:\n%s", failures, rec)
			if _, resets := s.damageCounts(); resets == 0 || failures == 0 {
				t.Fatalf("resets %d, failed calls %d: damage went unnoticed", resets, failures)
			}
			if !strings.Contains(rec.String(), "is damaged") {
				t.Errorf("warnings: %q", rec)
			}
			if err := s.Put(ctx, "after", scache.Entry{Written: time.Now(), Session: []byte("ok")}); err != nil {
				t.Fatal(err)
			}
			if e, err := s.Get(ctx, "after"); err != nil || string(e.Session) != "ok" {
				t.Fatalf("Get after reset = %q, %v", e.Session, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path, smallLimits, Options{Logger: failOnWarn(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if _, err := s2.Get(ctx, "after"); err != nil {
				t.Errorf("entry written after the reset lost at restart: %v", err)
			}
		})
	}
}

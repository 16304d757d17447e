package boltstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// Tests of failing commits (a full disk): nothing acknowledged is dropped
// while the store runs, new changes are refused until the backlog is
// committed, and every refusal and loss is counted and logged.

var roomyLimits = scache.Limits{MaxEntries: 1_000_000, MaxBytes: 1 << 30}

var errInjected = errors.New("injected commit failure")

// withFailureTiming sets the retry back-off and the report interval of
// the stores opened afterwards.
func withFailureTiming(t *testing.T, min, max, warn time.Duration) {
	t.Helper()
	oldMin, oldMax, oldWarn := retryMin, retryMax, warnEvery
	retryMin, retryMax, warnEvery = min, max, warn
	t.Cleanup(func() { retryMin, retryMax, warnEvery = oldMin, oldMax, oldWarn })
}

// failCommits makes the write-behind's commits fail (err) or work (nil).
func failCommits(s *Store, err error) {
	if err == nil {
		s.commitFault.Store(nil)
		return
	}
	s.commitFault.Store(&err)
}

// limitGrowth makes bbolt refuse to grow the file (on) or lets it (off):
// commits that need new pages fail inside bbolt, which rolls back as it
// does on a full disk.
func limitGrowth(s *Store, on bool) {
	s.mu.Lock() // no transaction runs meanwhile
	defer s.mu.Unlock()
	s.db.MaxSize = 0
	if on {
		s.db.MaxSize = 1
	}
}

// waitLines waits until n lines are logged: the committer logs after
// publishing its state, so a state seen is no proof its report is out.
func waitLines(t *testing.T, log *testlog.Recorder, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d lines are logged", n), func() bool { return len(log.Lines()) >= n })
}

// countWarnings counts the warnings logged so far.
func countWarnings(log *testlog.Recorder) int {
	n := 0
	for _, ln := range log.Lines() {
		if ln.Level == "warn" {
			n++
		}
	}
	return n
}

var reportCounts = regexp.MustCompile(`since the last report: (\d+) failed commits, (\d+) updates and deletes refused, (\d+) accepted changes lost`)

// tally adds up the counts of every report; any other line fails the test.
func tally(t *testing.T, log *testlog.Recorder) (failures, refused, lost int) {
	t.Helper()
	for _, ln := range log.Lines() {
		m := reportCounts.FindStringSubmatch(ln.Text)
		if m == nil {
			t.Fatalf("unexpected log line %q", ln.Text)
		}
		f, _ := strconv.Atoi(m[1])
		r, _ := strconv.Atoi(m[2])
		l, _ := strconv.Atoi(m[3])
		failures, refused, lost = failures+f, refused+r, lost+l
	}
	return failures, refused, lost
}

func storeStats(t *testing.T, s *Store) scache.StoreStats {
	t.Helper()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

// waitFor polls cond; deadlines are generous, since only the outcome is
// tested, not how soon it comes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFailedCommits waits until n commits have failed since Open.
func waitFailedCommits(t *testing.T, s *Store, n uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d commits failed", n), func() bool {
		s.wb.mu.Lock()
		defer s.wb.mu.Unlock()
		return s.wb.failedCommits >= n
	})
}

func waitRecovered(t *testing.T, s *Store) {
	t.Helper()
	waitFor(t, "the store recovers", func() bool {
		st := storeStats(t, s)
		return !st.Failing && st.Pending == 0
	})
}

func openCache(t *testing.T, path string, log *slog.Logger) (*Store, *scache.Cache) {
	t.Helper()
	s, err := Open(path, roomyLimits, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s, scache.New(scache.Config{Name: "smtpd", Database: "btree:" + path, Timeout: time.Hour}, s)
}

func session(i int) []byte { return benchSession(i, 700) }

func wantSession(t *testing.T, c *scache.Cache, id string, want []byte) {
	t.Helper()
	got, err := c.Lookup(ctx, id)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Lookup(%s) = %d bytes, %v; want its %d bytes", id, len(got), err, len(want))
	}
}

func wantNoSession(t *testing.T, c *scache.Cache, id string) {
	t.Helper()
	if got, err := c.Lookup(ctx, id); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("Lookup(%s) = %d bytes, %v; want a miss", id, len(got), err)
	}
}

// A failed commit keeps its changes (readable, and committed later), and
// refuses updates and deletes until the backlog is committed; refusals
// are counted exactly and reported once, with the recovery.
func TestCommitFailureRefusesAndRecovers(t *testing.T) {
	withFailureTiming(t, 5*time.Millisecond, 20*time.Millisecond, time.Hour)
	log := &testlog.Recorder{}
	s, c := openCache(t, filepath.Join(t.TempDir(), "cache.db"), log.Logger())
	defer c.Close()
	for i := range 20 {
		if err := c.Update(ctx, fmt.Sprint("base-", i), session(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// Acknowledged while commits are held, then their commit fails.
	release := holdCommits(t, s)
	for i := range 30 {
		if err := c.Update(ctx, fmt.Sprint("q-", i), session(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	replaced := session(999)
	if err := c.Update(ctx, "base-1", replaced); err != nil {
		t.Fatal(err)
	}
	if found, err := c.Delete(ctx, "base-2"); !found || err != nil {
		t.Fatalf("Delete(base-2) = %v, %v", found, err)
	}
	failCommits(s, errInjected)
	release()
	waitFor(t, "commits fail", func() bool { return storeStats(t, s).Failing })
	waitLines(t, log, 1)

	refusedUpdates := 0
	for i := range 10 {
		err := c.Update(ctx, fmt.Sprint("r-", i), session(200+i))
		if !errors.Is(err, scache.ErrStoreFailing) || !errors.Is(err, errInjected) {
			t.Fatalf("Update while commits fail = %v; want ErrStoreFailing wrapping the cause", err)
		}
		refusedUpdates++
	}
	if found, err := c.Delete(ctx, "base-3"); found || !errors.Is(err, scache.ErrStoreFailing) {
		t.Fatalf("Delete while commits fail = %v, %v; want refused", found, err)
	}
	if found, err := c.Delete(ctx, "never-stored"); found || err != nil {
		t.Fatalf("Delete of a missing id while commits fail = %v, %v; want a plain miss", found, err)
	}

	// The sweep goes on (here removing the oldest entry, base-0).
	if n, _, err := s.Expire(ctx, time.Now().Add(time.Hour), 1, nil); n != 1 || err != nil {
		t.Fatalf("Expire while commits fail = %d, %v", n, err)
	}
	// Lookups keep answering, from the backlog and from the file.
	wantNoSession(t, c, "base-0")
	for i := range 30 {
		wantSession(t, c, fmt.Sprint("q-", i), session(100+i))
	}
	wantSession(t, c, "base-1", replaced)
	wantNoSession(t, c, "base-2")
	wantSession(t, c, "base-3", session(3))
	for i := range 10 {
		wantNoSession(t, c, fmt.Sprint("r-", i))
	}
	cs, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats while commits fail: %v", err)
	}
	var baseBytes int64
	for i := 1; i < 20; i++ {
		baseBytes += scache.Size(fmt.Sprint("base-", i), session(i))
	}
	want := scache.StoreStats{Entries: 19, Bytes: baseBytes, Pending: 32, Failing: true, Refused: uint64(refusedUpdates + 1)}
	if cs.Store != want {
		t.Fatalf("store stats while failing = %+v, want %+v", cs.Store, want)
	}
	if cs.StoreErrors != uint64(refusedUpdates+1) || cs.Updates != 20+30+1 || cs.Deletes != 1 {
		t.Fatalf("cache stats while failing: %d store errors, %d updates, %d deletes", cs.StoreErrors, cs.Updates, cs.Deletes)
	}
	if lines := log.Lines(); len(lines) != 1 || lines[0].Level != "warn" || !strings.Contains(lines[0].Text, "cannot commit changes ("+errInjected.Error()+")") {
		t.Fatalf("want one warning that commits fail, got:\n%s", log)
	}

	failCommits(s, nil)
	waitRecovered(t, s)
	waitLines(t, log, 2)
	if n, _ := fullCount(t, s); n != 20-2+30 {
		t.Fatalf("%d entries in the file after recovery, want %d", n, 20-2+30)
	}
	wantSession(t, c, "base-1", replaced)
	wantNoSession(t, c, "base-2")
	lines := log.Lines()
	if len(lines) != 2 || lines[1].Level == "warn" || !strings.Contains(lines[1].Text, "commits succeed again") {
		t.Fatalf("want the recovery reported once, as info, got:\n%s", log)
	}
	if f, r, l := tally(t, log); f < 1 || r != refusedUpdates+1 || l != 0 {
		t.Fatalf("reports count %d failures, %d refused, %d lost; want >= 1, %d, 0:\n%s", f, r, l, refusedUpdates+1, log)
	}

	// Write-behind again: Update returns while commits are held.
	release = holdCommits(t, s)
	if err := c.Update(ctx, "after", session(7)); err != nil {
		t.Fatal(err)
	}
	wantSession(t, c, "after", session(7))
	release()
	if st := storeStats(t, s); st.Failing || st.Pending != 0 || st.Lost != 0 || st.Refused != uint64(refusedUpdates+1) {
		t.Fatalf("stats after recovery: %+v", st)
	}
}

// Closing while commits fail is the one way to lose acknowledged changes:
// exactly the backlog, counted and logged; the file stays intact.
func TestCloseWhileCommitsFail(t *testing.T) {
	withFailureTiming(t, time.Hour, time.Hour, time.Hour) // no retry before Close
	log := &testlog.Recorder{}
	path := filepath.Join(t.TempDir(), "cache.db")
	s, c := openCache(t, path, log.Logger())
	for i := range 5 {
		if err := c.Update(ctx, fmt.Sprint("base-", i), session(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	release := holdCommits(t, s)
	for i := range 10 {
		if err := c.Update(ctx, fmt.Sprint("q-", i), session(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	failCommits(s, errInjected)
	release()
	waitFor(t, "commits fail", func() bool { return storeStats(t, s).Failing })
	if st := storeStats(t, s); st.Pending != 10 {
		t.Fatalf("%d changes pending, want 10", st.Pending)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.wb.lost != 10 {
		t.Fatalf("%d changes counted lost at Close, want 10", s.wb.lost)
	}
	lines := log.Lines()
	if len(lines) != 2 || lines[1].Level != "warn" || !strings.Contains(lines[1].Text, "closed while commits fail") {
		t.Fatalf("want a warning at Close, got:\n%s", log)
	}
	if _, r, l := tally(t, log); r != 0 || l != 10 {
		t.Fatalf("reports count %d refused, %d lost; want 0, 10:\n%s", r, l, log)
	}

	s, err := Open(path, roomyLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := fullCount(t, s); n != 5 {
		t.Fatalf("%d entries after reopening, want the 5 committed", n)
	}
	for i := range 10 {
		if _, err := s.Get(ctx, fmt.Sprint("q-", i)); !errors.Is(err, scache.ErrNotFound) {
			t.Fatalf("lost change q-%d found: %v", i, err)
		}
	}
}

// A change bbolt itself rejects cannot wedge the backlog: it alone is
// dropped (and counted), the rest is committed, and no outage begins.
func TestRejectedChangeIsDropped(t *testing.T) {
	log := &testlog.Recorder{}
	s, err := Open(filepath.Join(t.TempDir(), "cache.db"), roomyLimits, Options{Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	// bbolt refuses to put a value over a nested bucket's key.
	err = s.run(ctx, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			_, err := tx.Bucket(bucketEntries).CreateBucket([]byte("poison"))
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	release := holdCommits(t, s)
	for _, id := range []string{"a", "poison", "b"} {
		if err := s.Put(ctx, id, scache.Entry{Written: time.Now(), Session: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	release()
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if e, err := s.Get(ctx, id); err != nil || string(e.Session) != id {
			t.Fatalf("Get(%s) = %q, %v", id, e.Session, err)
		}
	}
	if _, err := s.Get(ctx, "poison"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("Get(poison) = %v, want a miss", err)
	}
	if st := storeStats(t, s); st.Failing || st.Pending != 0 || st.Lost != 1 || st.Refused != 0 {
		t.Fatalf("stats = %+v, want 1 lost and nothing else", st)
	}
	if err := s.Close(); err != nil { // and with it the committer's last report
		t.Fatal(err)
	}
	if _, _, l := tally(t, log); l != 1 || !strings.Contains(log.String(), berrors.ErrIncompatibleValue.Error()) {
		t.Fatalf("want one loss reported with its reason, got:\n%s", log)
	}
}

// While commits keep failing, reports come at most once per interval and
// together count every refusal.
func TestFailureReportsRateLimited(t *testing.T) {
	const every = 40 * time.Millisecond
	withFailureTiming(t, 2*time.Millisecond, 5*time.Millisecond, every)
	log := &testlog.Recorder{}
	s, err := Open(filepath.Join(t.TempDir(), "cache.db"), roomyLimits, Options{Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// A backlog of several batches, so that recovery takes several commits.
	release := holdCommits(t, s)
	accepted := 0
	for ; accepted < 3*maxBatch; accepted++ {
		if err := s.Put(ctx, fmt.Sprint("backlog-", accepted), scache.Entry{Written: time.Now(), Session: []byte("s")}); err != nil {
			t.Fatal(err)
		}
	}
	failCommits(s, errInjected)
	release()
	refused := 0
	var firstRefusal time.Time
	deadline := time.Now().Add(60 * time.Second)
	// Refuse for a while, and until reports have kept coming.
	for i := 0; firstRefusal.IsZero() || time.Since(firstRefusal) < 6*every || countWarnings(log) < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports in 60 s of failing commits:\n%s", countWarnings(log), log)
		}
		err := s.Put(ctx, fmt.Sprint("id-", i), scache.Entry{Written: time.Now(), Session: []byte("s")})
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, scache.ErrStoreFailing):
			if firstRefusal.IsZero() {
				firstRefusal = time.Now()
			}
			refused++
		default:
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	failCommits(s, nil)
	waitRecovered(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)

	// Reports are composed at least every apart, all within elapsed.
	warnings := countWarnings(log)
	if limit := 1 + int(elapsed/every); warnings > limit {
		t.Fatalf("%d warnings in %v, want at most %d:\n%s", warnings, elapsed, limit, log)
	}
	if infos := len(log.Lines()) - warnings; infos != 1 {
		t.Fatalf("want the recovery reported once:\n%s", log)
	}
	if f, r, l := tally(t, log); f < 1 || r != refused || l != 0 {
		t.Fatalf("reports count %d failures, %d refused, %d lost; want >= 1, %d, 0", f, r, l, refused)
	}
	if s.wb.refused != uint64(refused) || s.wb.lost != 0 {
		t.Fatalf("counters: %d refused, %d lost; want %d, 0", s.wb.refused, s.wb.lost, refused)
	}
	s, err = Open(s.path, roomyLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := fullCount(t, s); n != accepted {
		t.Fatalf("%d entries after reopening, want the %d accepted", n, accepted)
	}
}

// checkOutage checks what must hold after updates into a file that can no
// longer grow: every acknowledged update reads back, no refused one does,
// and the counters say exactly how many were refused.
func checkOutage(t *testing.T, s *Store, c *scache.Cache, acked map[string][]byte, refused []string) {
	t.Helper()
	for id, want := range acked {
		wantSession(t, c, id, want)
	}
	for _, id := range refused {
		wantNoSession(t, c, id)
	}
	cs, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if cs.Updates != uint64(len(acked)) || cs.StoreErrors != uint64(len(refused)) ||
		cs.Store.Refused != uint64(len(refused)) || cs.Store.Lost != 0 {
		t.Fatalf("%d acknowledged and %d refused, but stats say updates %d, store errors %d, refused %d, lost %d",
			len(acked), len(refused), cs.Updates, cs.StoreErrors, cs.Store.Refused, cs.Store.Lost)
	}
}

// fillUntilRefused updates new ids, from benchID(first) on, until
// refusals number want, or fails the test if none come. It adds what was
// acknowledged to acked.
func fillUntilRefused(t *testing.T, c *scache.Cache, first, size, want int, acked map[string][]byte) (refused []string) {
	t.Helper()
	for i := first; len(refused) < want; i++ {
		if i == first+200_000 {
			t.Fatalf("no update refused after %d", i-first)
		}
		id, sess := benchID(i), benchSession(i, size)
		switch err := c.Update(ctx, id, sess); {
		case err == nil:
			acked[id] = sess
		case errors.Is(err, scache.ErrStoreFailing):
			refused = append(refused, id)
		default:
			t.Fatalf("Update %d: %v", i, err)
		}
	}
	return refused
}

// afterRecovery checks that the file holds exactly the acknowledged
// updates, that new ones stick, and that the file reopens intact.
func afterRecovery(t *testing.T, path string, s *Store, c *scache.Cache, acked map[string][]byte) {
	t.Helper()
	waitRecovered(t, s)
	if n, _ := fullCount(t, s); n != len(acked) {
		t.Fatalf("%d entries in the file after recovery, want the %d acknowledged", n, len(acked))
	}
	for j := range 100 {
		id, sess := benchID(1_000_000+j), benchSession(j, 700)
		if err := c.Update(ctx, id, sess); err != nil {
			t.Fatalf("Update after recovery: %v", err)
		}
		acked[id] = sess
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(path, roomyLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, _ := fullCount(t, s2); n != len(acked) {
		t.Fatalf("%d entries after reopening, want %d", n, len(acked))
	}
	for id, want := range acked {
		if e, err := s2.Get(ctx, id); err != nil || !bytes.Equal(e.Session, want) {
			t.Fatalf("after reopening, Get(%s) = %d bytes, %v", id, len(e.Session), err)
		}
	}
}

// bbolt's own failure when the file cannot grow, without root: commits
// roll back inside bbolt (its freelist rebuilt by walking the file) and
// the store goes on from there.
func TestFileCannotGrow(t *testing.T) {
	withFailureTiming(t, 5*time.Millisecond, 20*time.Millisecond, time.Hour)
	log := &testlog.Recorder{}
	path := filepath.Join(t.TempDir(), "cache.db")
	s, c := openCache(t, path, log.Logger())
	defer c.Close()
	acked := map[string][]byte{}
	for i := range 300 { // so that the file has free pages to reuse
		id, sess := benchID(i), benchSession(i, 2000)
		if err := c.Update(ctx, id, sess); err != nil {
			t.Fatal(err)
		}
		acked[id] = sess
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	limitGrowth(s, true)
	refused := fillUntilRefused(t, c, 300, 2000, 100, acked)
	checkOutage(t, s, c, acked, refused)
	waitFailedCommits(t, s, 3) // retries roll back too
	limitGrowth(s, false)
	afterRecovery(t, path, s, c, acked)
	if f, r, l := tally(t, log); f < 1 || r != len(refused) || l != 0 ||
		!strings.Contains(log.String(), berrors.ErrMaxSizeReached.Error()) {
		t.Fatalf("reports count %d failures, %d refused, %d lost; want >= 1, %d, 0, with the cause:\n%s", f, r, l, len(refused), log)
	}
}

// A real full file system: a 2 MB tmpfs, enlarged once full.
func TestFullFileSystem(t *testing.T) {
	testenv.NeedRoot(t) // to mount a tmpfs
	withFailureTiming(t, 5*time.Millisecond, 50*time.Millisecond, time.Hour)
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=2m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	log := &testlog.Recorder{}
	path := filepath.Join(dir, "cache.db")
	s, c := openCache(t, path, log.Logger())
	t.Cleanup(func() { c.Close() }) // before the unmount; a second Close is a no-op

	acked := map[string][]byte{}
	refused := fillUntilRefused(t, c, 0, 1500, 200, acked)
	waitLines(t, log, 1) // the outage is published, then its warning written
	if !strings.Contains(log.String(), unix.ENOSPC.Error()) {
		t.Fatalf("the warning does not give the cause:\n%s", log)
	}
	checkOutage(t, s, c, acked, refused)
	waitFailedCommits(t, s, 3) // retries fail on the full file system too
	checkOutage(t, s, c, acked, refused)
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags|unix.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("enlarge tmpfs: %v", err)
	}
	afterRecovery(t, path, s, c, acked)
	if f, r, l := tally(t, log); f < 1 || r != len(refused) || l != 0 {
		t.Fatalf("reports count %d failures, %d refused, %d lost; want >= 1, %d, 0:\n%s", f, r, l, len(refused), log)
	}
	lines := log.Lines()
	if last := lines[len(lines)-1]; last.Level == "warn" || !strings.Contains(last.Text, "commits succeed again") {
		t.Fatalf("the last report is not the recovery:\n%s", log)
	}
}

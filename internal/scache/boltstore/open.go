package boltstore

// Opening the file: taking its lock, proving an existing file intact (or
// moving it aside), marking it in use, and at Close marking it clean.

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// Open opens or creates the cache file at path (mode 0600) bounded by lim.
// An existing file is kept only if it can be shown intact; otherwise it is
// moved aside with a warning and an empty one is created.
func Open(path string, lim scache.Limits, opts Options) (*Store, error) {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return nil, fmt.Errorf("boltstore: invalid limits %+v", lim)
	}
	s := &Store{path: path, log: maillog.OrDiscard(opts.Logger), boot: bootID()}
	s.lim.Store(&lim)
	lockTimeout := opts.LockTimeout
	if lockTimeout <= 0 {
		lockTimeout = 5 * time.Second
	}
	f, err := openLocked(path, os.O_RDWR|os.O_CREATE, lockTimeout)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm() != 0o600 {
		maillog.Warnf(s.log, "session cache %s was mode %v; making it 0600", path, fi.Mode().Perm())
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("boltstore: %w", err)
		}
	}
	db, problem, err := openTrusted(f, s.boot)
	if err != nil {
		f.Close()
		return nil, err
	}
	if problem != nil {
		f.Close()
		aside, removed, err := moveAside(path)
		if err != nil {
			return nil, fmt.Errorf("boltstore: %s cannot be used (%v) nor moved aside: %w", path, problem, err)
		}
		s.setAside.Add(1)
		maillog.Warnf(s.log, "session cache %s cannot be trusted (%v); moved it to %s and starting empty", path, problem, aside)
		for _, old := range removed {
			maillog.Warnf(s.log, "session cache %s: removed %s, an older file moved aside", path, old)
		}
		if f, err = openLocked(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, lockTimeout); err != nil {
			return nil, err
		}
		if db, err = openFresh(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	s.file, s.db = f, db
	s.startWriteBehind()
	if err := s.markOpen(); err != nil {
		s.stopWriteBehind()
		s.db.Close()
		f.Close()
		return nil, err
	}
	if err := s.trimToLimits(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openLocked opens path and takes bbolt's exclusive flock on it before
// anything reads the file, so that a running tlsmgr's file is never judged
// (or moved aside) halfway through a write.
func openLocked(path string, flags int, timeout time.Duration) (*os.File, error) {
	f, err := safefile.Open(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("boltstore: lock %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// moveAside renames the file at path to PATH.corrupt-<unix time>. Only
// the newest such file is kept: a 1 GB cache moved aside at every power
// failure would otherwise fill the disk.
func moveAside(path string) (aside string, removed []string, err error) {
	older, _ := filepath.Glob(globEscape(path) + ".corrupt-*")
	aside = fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.corrupt-%d.%d", path, time.Now().Unix(), i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", nil, err
	}
	for _, old := range older {
		if fi, err := os.Lstat(old); err == nil && fi.Mode().IsRegular() && os.Remove(old) == nil {
			removed = append(removed, old)
		}
	}
	return aside, removed, nil
}

// globEscape quotes the pattern characters in a literal path.
func globEscape(path string) string {
	var b strings.Builder
	for _, r := range path {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// boltOptions open the database through a duplicate of f: bbolt closes
// what it opens, and the store keeps f for resets.
func boltOptions(f *os.File) (*bolt.Options, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("boltstore: dup: %w", err)
	}
	dup := os.NewFile(uintptr(fd), f.Name())
	used := false
	return &bolt.Options{
		OpenFile: func(string, int, os.FileMode) (*os.File, error) {
			if used {
				return nil, errors.New("boltstore: bbolt opened the file twice")
			}
			used = true
			return dup, nil
		},
		Timeout:      time.Second, // the lock is already ours, on the same open file
		NoGrowSync:   true,        // nothing is synced but Open's and Close's markers
		FreelistType: bolt.FreelistMapType,
		// The freelist is saved only by Close (markClean). After a crash
		// bbolt rebuilds it walking the tree in a goroutine of its own,
		// where a fault could not be recovered: checkStructure has walked
		// the same pages first.
		NoFreelistSync: true,
		NoStatistics:   true,
	}, nil
}

// openTrusted opens an existing (or empty) file and proves it intact. A
// non-nil problem means the file must not be used; err is a failure that
// says nothing about the file (and must not get it moved aside).
func openTrusted(f *os.File, boot string) (db *bolt.DB, problem, err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("boltstore: %w", err)
	}
	if fi.Size() == 0 {
		db, err := openFresh(f)
		return db, nil, err
	}
	if fi.Size() < 2*minPageSize || int64(int(fi.Size())) != fi.Size() {
		return nil, fmt.Errorf("damaged: a file of %d bytes", fi.Size()), nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("boltstore: map %s: %w", f.Name(), err)
	}
	_ = unix.Madvise(data, unix.MADV_WILLNEED) // read ahead what the walk will touch
	problem = checkStructure(data)
	unix.Munmap(data)
	if problem != nil {
		return nil, fmt.Errorf("damaged: %w", problem), nil
	}
	opts, err := boltOptions(f)
	if err != nil {
		return nil, nil, err
	}
	if problem := guard(func() error {
		db, err = bolt.Open(f.Name(), 0o600, opts)
		return err
	}); problem != nil {
		return nil, problem, nil
	}
	if problem := guard(func() error {
		return db.View(func(tx *bolt.Tx) error { return checkContents(tx, boot) })
	}); problem != nil {
		db.Close()
		return nil, problem, nil
	}
	return db, nil, nil
}

// openFresh makes a new database in the empty file f.
func openFresh(f *os.File) (*bolt.DB, error) {
	opts, err := boltOptions(f)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(f.Name(), 0o600, opts)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketExpiry, bucketMeta} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keyFormat, []byte(formatName)); err != nil {
			return err
		}
		return m.Put(keyCounts, counts{}.encode())
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: initialize: %w", err)
	}
	return db, nil
}

var errUncleanReboot = errors.New("it was open when the system went down, so unsynced writes may be lost")

// checkContents verifies the whole file logically: the format, the state
// record, every entry's checksum, and that the counters and the expiry
// index describe exactly the entries there are.
func checkContents(tx *bolt.Tx, boot string) error {
	entries, expiry, meta := tx.Bucket(bucketEntries), tx.Bucket(bucketExpiry), tx.Bucket(bucketMeta)
	if entries == nil || expiry == nil || meta == nil {
		return errors.New("not a session cache file (buckets missing)")
	}
	if f := meta.Get(keyFormat); string(f) != formatName {
		return fmt.Errorf("unknown format %q", f)
	}
	state, ok := decodeState(meta.Get(keyState))
	if !ok {
		return errors.New("damaged state record")
	}
	cleanClose := state.cleanTxid != 0 && state.cleanTxid == uint64(tx.ID())
	sameBoot := state.bootID != "" && state.bootID == boot
	if !cleanClose && !sameBoot {
		return errUncleanReboot
	}
	want, ok := decodeCounts(meta.Get(keyCounts))
	if !ok {
		return errors.New("damaged counters")
	}
	// The index and the entries must hold the same (written, id) pairs:
	// compare an order-independent sum of their hashes.
	seed := maphash.MakeSeed()
	got, entrySum, err := checkEntries(tx, seed, want.entries)
	if err != nil {
		return err
	}
	var indexSum uint64
	indexed := int64(0)
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) <= writtenLen {
			return errors.New("damaged expiry index")
		}
		indexed++
		indexSum += maphash.Bytes(seed, k)
	}
	if got != want || indexed != got.entries || indexSum != entrySum {
		return fmt.Errorf("counters say %d entries of %d bytes, found %d of %d, indexed %d (index matches: %v)",
			want.entries, want.bytes, got.entries, got.bytes, indexed, indexSum == entrySum)
	}
	return nil
}

// checkEntries verifies every entry's checksum and tallies the entries,
// their bytes and a sum of the hashes of their (written, id) pairs. This
// is most of a big file's start-up, so a big file is checked in two
// halves of its keys at once, the second in a read transaction of its
// own; the split is the median of the ids of a sample of entries.
func checkEntries(tx *bolt.Tx, seed maphash.Seed, expected int64) (counts, uint64, error) {
	var mid []byte
	if expected >= splitEntries {
		mid = splitKey(tx.Bucket(bucketExpiry))
	}
	if mid == nil {
		return tallyEntries(tx.Bucket(bucketEntries), nil, nil, seed, "")
	}
	type half struct {
		c   counts
		sum uint64
		err error
	}
	second := make(chan half, 1)
	go func() {
		var h half
		err := guard(func() error {
			return tx.DB().View(func(tx *bolt.Tx) error {
				var err error
				h.c, h.sum, err = tallyEntries(tx.Bucket(bucketEntries), mid, nil, seed, " of the second half")
				return err
			})
		})
		h.err = err // a fault is "damaged: ..." from guard
		second <- h
	}()
	// The second half is done with the map before this returns, even if
	// the first half faults (Close would wait for its transaction anyway).
	var h half
	received := false
	defer func() {
		if !received {
			<-second
		}
	}()
	c, sum, err := tallyEntries(tx.Bucket(bucketEntries), nil, mid, seed, "")
	h, received = <-second, true
	if err != nil {
		return counts{}, 0, err
	}
	if h.err != nil {
		return counts{}, 0, h.err
	}
	return counts{entries: c.entries + h.c.entries, bytes: c.bytes + h.c.bytes}, sum + h.sum, nil
}

// tallyEntries checks the entries with keys from lo (nil: the first) up
// to hi (nil: past the last).
func tallyEntries(b *bolt.Bucket, lo, hi []byte, seed maphash.Seed, which string) (got counts, sum uint64, err error) {
	var pair []byte
	c := b.Cursor()
	k, v := c.First()
	if lo != nil {
		k, v = c.Seek(lo)
	}
	for ; k != nil && (hi == nil || bytes.Compare(k, hi) < 0); k, v = c.Next() {
		if _, _, ok := decodeValue(k, v); !ok {
			return counts{}, 0, fmt.Errorf("entry %d%s fails its checksum", got.entries+1, which)
		}
		got.entries++
		got.bytes += storedSize(k, v)
		pair = append(append(pair[:0], v[:writtenLen]...), k...)
		sum += maphash.Bytes(seed, pair)
	}
	return got, sum, nil
}

// splitEntries is the size from which a file is checked in two halves.
const splitEntries = 20_000

// splitKey is the median id of the first entries in the expiry index (nil
// if there are too few). Write times say nothing of ids, so these are a
// sample of the id space.
func splitKey(expiry *bolt.Bucket) []byte {
	const sample = 64
	var ids [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(ids) < sample; k, _ = c.Next() {
		if len(k) > writtenLen {
			ids = append(ids, bytes.Clone(k[writtenLen:]))
		}
	}
	if len(ids) < sample {
		return nil
	}
	slices.SortFunc(ids, bytes.Compare)
	return ids[len(ids)/2]
}

// markOpen records, synced, that the file is in use during this boot;
// from then on commits are not synced.
func (s *Store) markOpen() error {
	s.db.NoSync = false
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyState, stateRecord{bootID: s.boot}.encode())
	})
	s.db.NoSync = true
	if err != nil {
		return fmt.Errorf("boltstore: %s: %w", s.path, err)
	}
	return nil
}

// markClean syncs everything, then records in a synced commit that the
// file is complete as of that commit.
func (s *Store) markClean() error {
	return guard(func() error {
		if err := s.db.Sync(); err != nil {
			return err
		}
		// This last commit also saves the freelist (not saved while
		// running, to keep commits small), so that the next Open reads it
		// instead of bbolt walking the whole file to rebuild it.
		s.db.NoSync, s.db.NoFreelistSync = false, false
		defer func() { s.db.NoSync, s.db.NoFreelistSync = true, true }()
		return s.db.Update(func(tx *bolt.Tx) error {
			rec := stateRecord{cleanTxid: uint64(tx.ID()), bootID: s.boot}
			return tx.Bucket(bucketMeta).Put(keyState, rec.encode())
		})
	})
}

// Close commits what is queued, syncs the file, marks it clean and closes
// it. Changes that still cannot be committed are counted lost and logged.
func (s *Store) Close() error {
	s.stopWriteBehind()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.db != nil {
		err = s.markClean()
		if cerr := guard(s.db.Close); err == nil {
			err = cerr
		}
		s.db = nil
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("boltstore: close %s: %w", s.path, err)
	}
	return nil
}

// bootID identifies the running kernel boot; tests replace it.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

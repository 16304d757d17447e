// Package boltstore is an scache.Store kept in a file with go.etcd.io/bbolt,
// for the btree:, hash:, lmdb: and sdbm: cache databases (whatever the type
// name, the format is this package's own).
//
// The file is opened once, before the daemon chroots; every later access,
// including starting over on a damaged file, goes through that descriptor.
//
// Crash safety. Commits are not synced (bbolt NoSync): a killed process
// loses nothing the kernel already has, and bbolt's copy-on-write pages
// with the meta page written last keep the file consistent. Against power
// loss, Open records with a synced commit that the file is in use during
// this kernel boot (the boot id), and Close syncs everything, then records
// with a synced commit that the file is clean as of that very transaction.
// At the next Open the file is trusted only if that clean record is still
// the newest transaction, or if it was last opened during the current boot
// (the process died, the kernel did not). Otherwise it was open when the
// machine went down and unsynced pages may be missing or stale.
//
// Proof at Open. Before bbolt maps an existing file, its page tree is
// walked with bounds checks (checkStructure), so that bbolt never follows
// a damaged page into a fault, a cycle or a huge allocation, where it
// would crash rather than panic. Then every entry's CRC-32C is verified,
// and the counters and the expiry index must describe exactly the entries
// found. A file that fails anything is renamed PATH.corrupt-<unix time>,
// with a warning, and the store starts empty: never a crash loop.
//
// While running, Get verifies the checksum of what it returns (a mismatch
// is deleted and reported as a miss), and a panic or memory fault inside
// bbolt (the file damaged under us) truncates the file through the kept
// descriptor and starts over, with a warning.
//
// Layout and costs. Entries are keyed by id; an expiry index keyed by
// (write time, id) makes eviction and Expire ordered range scans, and the
// entry count and byte total are kept in the same transactions, so Stats
// needs no scan (Open counts anyway, to check them). bbolt reuses freed
// pages, so churn does not grow the file. The freelist is written only by
// Close (NoFreelistSync), which keeps commits small; after a crash bbolt
// rebuilds it at Open by walking the tree. Concurrent Puts and Deletes
// share commits (group commit).
//
// Failed commits. Puts and Deletes are committed in the background
// (writebehind.go). When commits fail (the disk is full) nothing
// acknowledged is dropped while the store is open: the failed changes stay
// queued and are retried with back-off, and new Puts and Deletes are
// refused with scache.ErrStoreFailing until the backlog is committed.
// Lookups, Expire and Stats keep working throughout.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/metrics"
	"github.com/gotlsmgr/tlsmgr/scache"
)

// Logger receives warnings about damaged or untrusted files.
type Logger interface {
	Warn(format string, args ...any)
}

// Options tune Open.
type Options struct {
	Logger Logger // nil discards the warnings
	// LockTimeout bounds the wait for another process holding the file
	// (an older tlsmgr still shutting down). Zero means 5 seconds.
	LockTimeout time.Duration
}

// ErrClosed is returned by calls on a closed store.
var ErrClosed = errors.New("boltstore: store is closed")

// ErrUnavailable is returned after the file was found damaged while
// running and could not be started over.
var ErrUnavailable = errors.New("boltstore: cache file unavailable")

// Store is a persistent scache.Store. It is safe for concurrent use.
type Store struct {
	path string                        // for messages only: the name may not resolve after chroot
	lim  atomic.Pointer[scache.Limits] // changed by SetLimits
	log  Logger
	boot string // kernel boot id, read before chroot hides /proc

	// mu is held shared by every call and exclusively by Close and by a
	// reset after damage, so that the database is never swapped under a
	// running transaction.
	mu     sync.RWMutex
	file   *os.File // kept open; bbolt gets duplicates of it
	db     *bolt.DB // nil after Close or a failed reset
	closed bool

	group    groupCommit
	wb       writeBehind
	deleteMu sync.Mutex // see Delete

	evictions atomic.Uint64
	damaged   atomic.Uint64
	resets    atomic.Uint64
	setAside  atomic.Uint64 // files moved aside at Open: damaged or untrusted

	// commitFault, while set, fails write-behind commits (tests only).
	commitFault atomic.Pointer[error]
}

// Open opens or creates the cache file at path (mode 0600) bounded by lim.
// An existing file is kept only if it can be shown intact; otherwise it is
// moved aside with a warning and an empty one is created.
func Open(path string, lim scache.Limits, opts Options) (*Store, error) {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return nil, fmt.Errorf("boltstore: invalid limits %+v", lim)
	}
	s := &Store{path: path, log: opts.Logger, boot: bootID()}
	s.lim.Store(&lim)
	if s.log == nil {
		s.log = discard{}
	}
	lockTimeout := opts.LockTimeout
	if lockTimeout <= 0 {
		lockTimeout = 5 * time.Second
	}
	f, err := openLocked(path, os.O_RDWR|os.O_CREATE, lockTimeout)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("session cache %s was mode %v; making it 0600", path, fi.Mode().Perm())
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
		s.log.Warn("session cache %s cannot be trusted (%v); moved it to %s and starting empty", path, problem, aside)
		for _, old := range removed {
			s.log.Warn("session cache %s: removed %s, an older file moved aside", path, old)
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
	var got counts
	var entrySum, indexSum uint64
	var pair []byte
	c := entries.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if _, _, ok := decodeValue(k, v); !ok {
			return fmt.Errorf("entry %d fails its checksum", got.entries+1)
		}
		got.entries++
		got.bytes += storedSize(k, v)
		pair = append(append(pair[:0], v[:writtenLen]...), k...)
		entrySum += maphash.Bytes(seed, pair)
	}
	indexed := int64(0)
	c = expiry.Cursor()
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

// guard runs fn, turning a panic or a memory fault (a damaged file read
// through the map) into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
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

// SetLimits bounds the store by lim from now on (scache.Resizer). A
// smaller bound evicts the oldest-written entries at once, down to it, a
// bounded number per transaction; writes still queued are held to it when
// they are committed.
func (s *Store) SetLimits(ctx context.Context, lim scache.Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("boltstore: invalid limits %+v", lim)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.lim.Store(&lim)
	return s.trimToLimits()
}

// Limits are the store's current bounds.
func (s *Store) Limits() scache.Limits { return *s.lim.Load() }

// trimToLimits evicts, a bounded number per transaction, what exceeds
// limits smaller than those the file was filled under.
func (s *Store) trimToLimits() error {
	for {
		done, evicted := false, 0
		err := s.run(context.Background(), func(db *bolt.DB) error {
			return db.Update(func(tx *bolt.Tx) error {
				w := beginWrite(tx)
				lim := s.lim.Load()
				for range 1000 {
					if w.c.entries <= int64(lim.MaxEntries) && w.c.bytes <= lim.MaxBytes || !w.evictOldest() {
						done = true
						break
					}
				}
				evicted = w.evicted
				return w.finish()
			})
		})
		if err != nil {
			return err
		}
		s.evictions.Add(uint64(evicted))
		if done {
			return nil
		}
	}
}

// write is one write transaction with the counters it maintains.
type write struct {
	entries, expiry, meta *bolt.Bucket
	c, before             counts
	evicted               int
}

func beginWrite(tx *bolt.Tx) *write {
	w := &write{entries: tx.Bucket(bucketEntries), expiry: tx.Bucket(bucketExpiry), meta: tx.Bucket(bucketMeta)}
	// Keys are mostly appended in time order and deleted from the front.
	w.expiry.FillPercent = 0.9
	w.c, _ = decodeCounts(w.meta.Get(keyCounts))
	w.before = w.c
	return w
}

func (w *write) finish() error {
	if w.c == w.before {
		return nil
	}
	return w.meta.Put(keyCounts, w.c.encode())
}

// remove deletes entry id, whose stored value is v, and its index key.
func (w *write) remove(id, v []byte) error {
	size := storedSize(id, v)
	var ikey []byte
	if len(v) >= writtenLen {
		ikey = expiryKey(v, id)
	}
	if err := w.entries.Delete(id); err != nil {
		return err
	}
	if ikey != nil {
		if err := w.expiry.Delete(ikey); err != nil {
			return err
		}
	}
	w.c.entries = max(w.c.entries-1, 0)
	w.c.bytes = max(w.c.bytes-size, 0)
	return nil
}

// oldest returns the first index key and the entry it names. v is nil for
// an index key with no matching entry, which the caller drops.
func (w *write) oldest() (ikey, id, v []byte) {
	k, _ := w.expiry.Cursor().First()
	if k == nil {
		return nil, nil, nil
	}
	ikey = bytes.Clone(k)
	if len(ikey) <= writtenLen {
		return ikey, nil, nil
	}
	id = ikey[writtenLen:]
	v = w.entries.Get(id)
	if len(v) < writtenLen || !bytes.Equal(v[:writtenLen], ikey[:writtenLen]) {
		return ikey, id, nil
	}
	return ikey, id, v
}

// evictOldest removes the oldest entry; false if there is none.
func (w *write) evictOldest() bool {
	for {
		ikey, id, v := w.oldest()
		if ikey == nil {
			return false
		}
		if v == nil {
			_ = w.expiry.Delete(ikey)
			continue
		}
		if w.remove(id, v) != nil {
			return false
		}
		w.evicted++
		return true
	}
}

// run calls fn with the database under the shared lock. A panic or a
// memory fault in fn means the file was damaged while open: the store is
// started over on an empty file.
func (s *Store) run(ctx context.Context, fn func(db *bolt.DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	db := s.db
	if db == nil {
		closed := s.closed
		s.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		return ErrUnavailable
	}
	var fault any
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				fault = r
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return fn(db)
	}()
	s.mu.RUnlock()
	if fault != nil {
		if p, ok := fault.(callerPanic); ok {
			panic(p.value)
		}
		s.reset(db, fault)
		return fmt.Errorf("%w: %s was damaged and has been emptied: %v", ErrUnavailable, s.path, fault)
	}
	return err
}

// callerPanic carries a panic from the caller's visit function through
// run, which must not mistake it for damage.
type callerPanic struct{ value any }

// reset starts over on an empty file after damage found while running.
// The file is truncated through the kept descriptor: after chroot it
// cannot be renamed or reopened by name.
func (s *Store) reset(broken *bolt.DB, fault any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != broken {
		return // another call got there first
	}
	s.db = nil
	s.log.Warn("session cache %s is damaged (%v); discarding its contents", s.path, fault)
	// A panic may have left bbolt's locks held, and Close would wait for
	// them forever: give it a moment, then abandon it.
	closed := make(chan struct{})
	go func() {
		_ = guard(broken.Close)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Second):
		s.log.Warn("session cache %s: abandoning the damaged database handle", s.path)
	}
	fd := int(s.file.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		s.log.Warn("session cache %s: cannot relock it (%v); cache disabled", s.path, err)
		return
	}
	if err := s.file.Truncate(0); err != nil {
		s.log.Warn("session cache %s: cannot truncate it (%v); cache disabled", s.path, err)
		return
	}
	err := guard(func() error {
		db, err := openFresh(s.file)
		if err != nil {
			return err
		}
		s.db = db
		return s.markOpen()
	})
	if err != nil {
		s.log.Warn("session cache %s: cannot start over (%v); cache disabled", s.path, err)
		if s.db != nil {
			_ = guard(s.db.Close)
			s.db = nil
		}
		return
	}
	s.resets.Add(1)
}

// Get returns the entry for id. An entry that fails its checksum is
// deleted and reported as missing.
func (s *Store) Get(ctx context.Context, id string) (scache.Entry, error) {
	if e, found, ok := s.getQueued(id); ok {
		if !found {
			return scache.Entry{}, scache.ErrNotFound
		}
		return e, nil
	}
	var e scache.Entry
	damaged := false
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			k := stringBytes(id)
			v := tx.Bucket(bucketEntries).Get(k)
			if v == nil {
				return scache.ErrNotFound
			}
			nanos, session, ok := decodeValue(k, v)
			if !ok {
				damaged = true
				return scache.ErrNotFound
			}
			e = scache.Entry{Written: time.Unix(0, nanos), Session: bytes.Clone(session)}
			if e.Session == nil {
				e.Session = []byte{}
			}
			return nil
		})
	})
	if damaged {
		s.dropDamaged(ctx, id)
	}
	return e, err
}

// dropDamaged deletes entry id if it still fails its checksum.
func (s *Store) dropDamaged(ctx context.Context, id string) {
	dropped := false
	_ = s.run(ctx, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			w := beginWrite(tx)
			k := []byte(id)
			v := w.entries.Get(k)
			if v == nil {
				return nil
			}
			if _, _, ok := decodeValue(k, v); ok {
				return nil
			}
			if err := w.remove(k, v); err != nil {
				return err
			}
			dropped = true
			return w.finish()
		})
	})
	if dropped {
		s.damaged.Add(1)
		s.log.Warn("session cache %s: dropped an entry that failed its checksum", s.path)
	}
}

// Put stores e under id, then evicts the oldest-written entries (possibly
// e itself) while the limits are exceeded.
func (s *Store) Put(ctx context.Context, id string, e scache.Entry) error {
	size := scache.Size(id, e.Session)
	if size > s.lim.Load().MaxBytes {
		return scache.ErrTooLarge
	}
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("boltstore: id of %d bytes", len(id))
	}
	if len(e.Session) > bolt.MaxValueSize-valueHeaderLen {
		return scache.ErrTooLarge // bbolt would reject it at every retry
	}
	if e.Written.Before(minWritten) || e.Written.After(maxWritten) {
		return errWrittenRange
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.enqueue(&queuedWrite{id: id, value: encodeValue(id, e.Written.UnixNano(), e.Session), size: size})
}

// applyPut stores value v under id k in w, then evicts the oldest-written
// entries (possibly this one) while the limits are exceeded.
func (s *Store) applyPut(w *write, k, v []byte, size int64) error {
	if old := w.entries.Get(k); old != nil {
		if err := w.remove(k, old); err != nil {
			return err
		}
	}
	if err := w.entries.Put(k, v); err != nil {
		return err
	}
	if err := w.expiry.Put(expiryKey(v, k), []byte{}); err != nil {
		return err
	}
	w.c.entries++
	w.c.bytes += size
	lim := s.lim.Load()
	for w.c.entries > int64(lim.MaxEntries) || w.c.bytes > lim.MaxBytes {
		if !w.evictOldest() {
			break
		}
	}
	return nil
}

// applyDelete removes id k from w and reports whether it was there.
func applyDelete(w *write, k []byte) (bool, error) {
	v := w.entries.Get(k)
	if v == nil {
		return false, nil
	}
	return true, w.remove(k, v)
}

// Delete removes the entry for id and reports whether there was one.
func (s *Store) Delete(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// Whether it is there, and the queueing of its removal, must not be
	// separated by another write of the same id.
	s.deleteMu.Lock()
	defer s.deleteMu.Unlock()
	found := false
	if q, ok := s.queued(id); ok {
		found = q.value != nil
	} else {
		err := s.run(ctx, func(db *bolt.DB) error {
			return db.View(func(tx *bolt.Tx) error {
				found = tx.Bucket(bucketEntries).Get(stringBytes(id)) != nil
				return nil
			})
		})
		if err != nil {
			return false, err
		}
	}
	if !found {
		return false, nil
	}
	return true, s.enqueue(&queuedWrite{id: id})
}

// A writeOp is one Put or Delete waiting for a group commit.
type writeOp struct {
	apply   func(*write) error // may run twice: once in a group, once alone
	alone   bool               // commit by itself (Expire)
	err     error
	evicted int
	turn    chan bool // true: lead the next commit; false: done
}

// groupCommit lets concurrent Puts and Deletes share one transaction: a
// commit costs about the same for one change as for fifty, since most of
// it is rewriting the same branch and meta pages. The first caller
// commits at once; callers arriving meanwhile queue, and the first of
// them commits the queue next. A lone caller never waits. Expire goes
// through the same queue, alone in its transaction: writers are served in
// arrival order, so a Put waits for at most one sweep batch.
type groupCommit struct {
	mu    sync.Mutex
	queue []*writeOp
	busy  bool
}

func (s *Store) update(ctx context.Context, alone bool, apply func(*write) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{apply: apply, alone: alone, turn: make(chan bool, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, op)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead && !<-op.turn {
		return op.err
	}
	// Leading: op is at the head of the queue.
	g.mu.Lock()
	n := 1
	for !op.alone && n < len(g.queue) && !g.queue[n].alone {
		n++
	}
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()
	// Pass the lead on even if commit panics (from a caller's visit).
	defer func() {
		g.mu.Lock()
		if len(g.queue) > 0 {
			g.queue[0].turn <- true
		} else {
			g.queue, g.busy = nil, false
		}
		g.mu.Unlock()
	}()
	s.commit(batch)
	<-op.turn
	return op.err
}

// commit applies batch in one transaction and tells each op its result.
// If the transaction fails, each op is retried alone so that one bad op
// does not fail the others.
func (s *Store) commit(batch []*writeOp) {
	err := s.run(context.Background(), func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			w := beginWrite(tx)
			for _, op := range batch {
				before := w.evicted
				if err := op.apply(w); err != nil {
					return err
				}
				op.evicted = w.evicted - before
			}
			return w.finish()
		})
	})
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) {
		for _, op := range batch {
			s.commit([]*writeOp{op})
		}
		return
	}
	for _, op := range batch {
		op.err = err
		if err == nil {
			s.evictions.Add(uint64(op.evicted))
		}
		op.turn <- false
	}
}

// Expire removes up to max entries written before cutoff, oldest first,
// in one transaction.
func (s *Store) Expire(ctx context.Context, cutoff time.Time, max int, visit func(session []byte)) (removed int, more bool, err error) {
	// The sweep sees every earlier write, except while commits fail: then
	// the file is swept as it is, which may free pages the retry needs.
	if err := s.Flush(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return 0, false, err
	}
	var limit [writtenLen]byte
	switch {
	case cutoff.After(maxWritten):
		copy(limit[:], bytes.Repeat([]byte{0xFF}, writtenLen))
	case !cutoff.Before(minWritten):
		putWritten(limit[:], cutoff.UnixNano())
	}
	expired := func(ikey []byte) bool {
		return ikey != nil && bytes.Compare(ikey[:min(len(ikey), writtenLen)], limit[:]) < 0
	}
	err = s.update(ctx, true, func(w *write) error {
		removed, more = 0, false
		for {
			ikey, id, v := w.oldest()
			if !expired(ikey) {
				return nil
			}
			if removed >= max {
				more = true
				return nil
			}
			if v == nil {
				if err := w.expiry.Delete(ikey); err != nil {
					return err
				}
				continue
			}
			if _, session, ok := decodeValue(id, v); ok && visit != nil {
				callVisit(visit, session)
			}
			if err := w.remove(id, v); err != nil {
				return err
			}
			removed++
		}
	})
	if err != nil {
		return 0, false, err
	}
	return removed, more, nil
}

func callVisit(visit func([]byte), session []byte) {
	defer func() {
		if r := recover(); r != nil {
			panic(callerPanic{r})
		}
	}()
	visit(session)
}

// Each lists the entries in the file, after committing what is queued.
// One read transaction: writers go on meanwhile (bbolt's MVCC).
func (s *Store) Each(ctx context.Context, visit func(id string, written time.Time, size int) bool) error {
	if err := s.Flush(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return err
	}
	return s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEntries).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				nanos, session, ok := decodeValue(k, v)
				if !ok {
					continue // dropped when looked up
				}
				if !visit(string(k), time.Unix(0, nanos), len(session)) || ctx.Err() != nil {
					break
				}
			}
			return ctx.Err()
		})
	})
}

// Stats reports the entry count and bytes (kept in the file), the
// evictions since Open, and what became of acknowledged changes. While
// commits fail, the counts are those of the file, without the backlog.
func (s *Store) Stats(ctx context.Context) (scache.StoreStats, error) {
	if err := s.Flush(ctx); err != nil && !errors.Is(err, scache.ErrStoreFailing) {
		return scache.StoreStats{}, err
	}
	var c counts
	err := s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			c, _ = decodeCounts(tx.Bucket(bucketMeta).Get(keyCounts))
			return nil
		})
	})
	st := scache.StoreStats{Entries: int(c.entries), Bytes: c.bytes, Evictions: s.evictions.Load()}
	s.writeStats(&st)
	return st, err
}

// CollectMetrics emits the file's damage and recovery counts.
func (s *Store) CollectMetrics(_ context.Context, emit metrics.Emit) {
	emit.Counter(metrics.Desc{Name: "cache_file_damaged_entries", Help: "Entries of the cache file that failed their checksum and were dropped."}, s.damaged.Load())
	emit.Counter(metrics.Desc{Name: "cache_file_resets", Help: "Times the cache file was started over after damage found while running."}, s.resets.Load())
	emit.Counter(metrics.Desc{Name: "cache_file_set_aside", Help: "Cache files moved aside at start-up as damaged or untrusted."}, s.setAside.Load())
}

// damageCounts reports how many entries failed their checksum since Open, and
// how many times the file was started over after damage.
func (s *Store) damageCounts() (entries, resets uint64) {
	return s.damaged.Load(), s.resets.Load()
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

type discard struct{}

func (discard) Warn(string, ...any) {}

// What the cache and the daemon use beyond scache.Store.
var (
	_ scache.Expirer          = (*Store)(nil)
	_ scache.Resizer          = (*Store)(nil)
	_ scache.Lister           = (*Store)(nil)
	_ scache.MetricsCollector = (*Store)(nil)
)

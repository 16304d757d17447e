package prng

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
)

// ExchangeFileSize is the fixed length of tls_random_exchange_name.
const ExchangeFileSize = 1024

var errLockTimeout = errors.New("lock held by another process")

// exchangeFile is the PRNG exchange file, kept open (with its directory)
// from before the daemon chroots until Close.
type exchangeFile struct {
	path string
	dir  string
	base string
	// dirFD lets the file be recreated after the daemon has chrooted,
	// when path no longer resolves to the same place. -1 if unavailable.
	dirFD int
	fd    int
	log   *slog.Logger
}

func openExchangeFile(path string, fill func([]byte) error, log *slog.Logger) (*exchangeFile, error) {
	e := &exchangeFile{path: path, dir: filepath.Dir(path), base: filepath.Base(path), dirFD: -1, fd: -1, log: log}
	dirFD, err := unix.Open(e.dir, dirOpenFlags, 0)
	if err != nil {
		return nil, err
	}
	e.dirFD = dirFD
	if e.fd, err = e.openOrCreate(fill); err != nil {
		unix.Close(e.dirFD)
		return nil, err
	}
	return e, nil
}

// openOrCreate opens the file by name, creating it if missing. A new file is
// written in full under a temporary name and then linked into place, so
// that the name never refers to a file shorter than ExchangeFileSize, even
// if the process dies half-way.
func (e *exchangeFile) openOrCreate(fill func([]byte) error) (int, error) {
	for range 3 {
		fd, err := safefile.OpenAt(e.dirFD, e.base, unix.O_RDWR, 0)
		if err == nil {
			if err := e.restrictMode(fd); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		fd, err = e.createComplete(fill)
		if err != unix.EEXIST {
			return fd, err
		}
		// Another process created it meanwhile: open theirs.
	}
	return -1, unix.EEXIST
}

// restrictMode makes an existing file 0600: its bytes seed other
// processes' generators, so nobody else may read them.
func (e *exchangeFile) restrictMode(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if perm := st.Mode & 0o7777; perm != 0o600 {
		maillog.Warnf(e.log, "PRNG exchange file %s was mode %04o; making it 0600", e.path, perm)
		return unix.Fchmod(fd, 0o600)
	}
	return nil
}

func (e *exchangeFile) createComplete(fill func([]byte) error) (int, error) {
	var suffix [8]byte
	if err := fill(suffix[:]); err != nil {
		return -1, err
	}
	tmp := fmt.Sprintf(".%s.%d.%s.tmp", e.base, os.Getpid(), hex.EncodeToString(suffix[:]))
	fd, err := unix.Openat(e.dirFD, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		unix.Unlinkat(e.dirFD, tmp, 0)
		return -1, err
	}
	// The umask may only have removed bits; make the mode exactly 0600.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return fail(err)
	}
	buf := make([]byte, ExchangeFileSize)
	if err := fill(buf); err != nil {
		return fail(err)
	}
	if err := pwriteFull(fd, buf, 0); err != nil {
		return fail(err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fail(err)
	}
	if err = moveIntoPlace(e.dirFD, tmp, e.base); err == nil {
		return fd, nil
	}
	unix.Close(fd)
	if err == unix.EEXIST {
		return -1, err
	}
	// No hard links here (some network or FUSE file systems): fall back
	// to plain creation, as Postfix does.
	if fd, err = safefile.OpenAt(e.dirFD, e.base, unix.O_RDWR|unix.O_CREAT, 0o600); err != nil {
		return -1, err
	}
	if err := e.restrictMode(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// removed reports whether the file has no name left (link count 0).
func (e *exchangeFile) removed() (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(e.fd, &st); err != nil {
		return false, err
	}
	return st.Nlink == 0, nil
}

// reopen replaces the descriptor of a removed file with one for a new file
// at the same name: first in the directory kept open since start-up, then
// by path in case the directory itself was replaced.
func (e *exchangeFile) reopen(fill func([]byte) error) error {
	fd, err := e.openOrCreate(fill)
	if err != nil {
		dirFD, dirErr := unix.Open(e.dir, dirOpenFlags, 0)
		if dirErr != nil {
			return err
		}
		unix.Close(e.dirFD)
		e.dirFD = dirFD
		if fd, err = e.openOrCreate(fill); err != nil {
			return err
		}
	}
	unix.Close(e.fd)
	e.fd = fd
	return nil
}

// update is the read-stir-write cycle: under an exclusive flock, mix in
// what the file holds (other programs may have added to it), then replace
// its first ExchangeFileSize bytes with fresh pool output in place.
func (e *exchangeFile) update(pool *drbgPool, lockTimeout time.Duration) error {
	if err := flockExclusive(e.fd, lockTimeout); err != nil {
		return fmt.Errorf("cannot lock: %w", err)
	}
	defer unix.Flock(e.fd, unix.LOCK_UN)

	buf := make([]byte, ExchangeFileSize)
	n, err := preadFull(e.fd, buf, 0)
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	if n > 0 {
		pool.Mix(buf[:n])
	}
	if err := pool.generate(buf); err != nil {
		return err
	}
	// pwrite over the old bytes, never truncate first: at any instant
	// the file holds ExchangeFileSize bytes (old, new, or a mix of both,
	// all of which are fine seed material).
	if err := pwriteFull(e.fd, buf, 0); err != nil {
		return fmt.Errorf("cannot write: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(e.fd, &st); err == nil && st.Size > ExchangeFileSize {
		// Only trailing bytes someone else added; the first 1024 are new.
		if err := unix.Ftruncate(e.fd, ExchangeFileSize); err != nil {
			return fmt.Errorf("cannot truncate: %w", err)
		}
	}
	if err := unix.Fsync(e.fd); err != nil {
		return fmt.Errorf("cannot fsync: %w", err)
	}
	return nil
}

func (e *exchangeFile) close() error {
	err := unix.Close(e.fd)
	if e.dirFD >= 0 {
		unix.Close(e.dirFD)
	}
	return err
}

// flockExclusive takes an exclusive flock without ever blocking in the
// kernel, so a process that holds the lock forever cannot stall the daemon.
func flockExclusive(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EWOULDBLOCK:
		default:
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%w (waited %v)", errLockTimeout, timeout)
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, 50*time.Millisecond)
	}
}

func preadFull(fd int, buf []byte, offset int64) (int, error) {
	got := 0
	for got < len(buf) {
		n, err := unix.Pread(fd, buf[got:], offset+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	return got, nil
}

func pwriteFull(fd int, buf []byte, offset int64) error {
	done := 0
	for done < len(buf) {
		n, err := unix.Pwrite(fd, buf[done:], offset+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		done += n
	}
	return nil
}

// linkIntoPlace is moveIntoPlace by a link and an unlink, for systems or
// file systems without an exclusive rename.
func linkIntoPlace(dirFD int, tmp, base string) error {
	err := unix.Linkat(dirFD, tmp, dirFD, base, 0)
	unix.Unlinkat(dirFD, tmp, 0)
	return err
}

package boltstore

// Fault containment: a panic or memory fault inside bbolt means the file
// was damaged under us; the call fails and the store starts over.

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

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
	maillog.Warnf(s.log, "session cache %s is damaged (%v); discarding its contents", s.path, fault)
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
		maillog.Warnf(s.log, "session cache %s: abandoning the damaged database handle", s.path)
	}
	fd := int(s.file.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		maillog.Warnf(s.log, "session cache %s: cannot relock it (%v); cache disabled", s.path, err)
		return
	}
	if err := s.file.Truncate(0); err != nil {
		maillog.Warnf(s.log, "session cache %s: cannot truncate it (%v); cache disabled", s.path, err)
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
		maillog.Warnf(s.log, "session cache %s: cannot start over (%v); cache disabled", s.path, err)
		if s.db != nil {
			_ = guard(s.db.Close)
			s.db = nil
		}
		return
	}
	s.resets.Add(1)
}

// dropDamaged deletes entry id if it still fails its checksum.
func (s *Store) dropDamaged(ctx context.Context, id string) {
	dropped := false
	_ = s.update(ctx, func(w *write) error {
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
		return nil
	})
	if dropped {
		s.damaged.Add(1)
		maillog.Warnf(s.log, "session cache %s: dropped an entry that failed its checksum", s.path)
	}
}

func callVisit(visit func([]byte), session []byte) {
	defer func() {
		if r := recover(); r != nil {
			panic(callerPanic{r})
		}
	}()
	visit(session)
}

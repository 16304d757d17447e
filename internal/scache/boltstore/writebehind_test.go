package boltstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// holdCommits starts a sweep whose visit blocks, so that no transaction
// (and no write-behind commit) can run until release is called.
func holdCommits(t *testing.T, s *Store) (release func()) {
	t.Helper()
	if err := s.Put(ctx, "held", scache.Entry{Written: time.Now().Add(-time.Hour), Session: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	entered, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s.Expire(ctx, time.Now().Add(-time.Minute), 1, func([]byte) { close(entered); <-unblock })
	}()
	<-entered
	return func() { close(unblock); <-done }
}

func TestQueuedWritesAreVisible(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	s, err := Open(path, scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20}, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	release := holdCommits(t, s)
	now := time.Now()
	if err := s.Put(ctx, "x", scache.Entry{Written: now, Session: []byte("x1")}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Get(ctx, "x"); err != nil || string(e.Session) != "x1" || !e.Written.Equal(now) {
		t.Fatalf("queued write not visible: %q %v %v", e.Session, e.Written, err)
	}
	if found, err := s.Delete(ctx, "x"); !found || err != nil {
		t.Fatalf("Delete of a queued entry = %v, %v", found, err)
	}
	if _, err := s.Get(ctx, "x"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("queued delete not visible: %v", err)
	}
	if found, _ := s.Delete(ctx, "x"); found {
		t.Fatal("a second Delete found the entry again")
	}
	if err := s.Put(ctx, "y", scache.Entry{Written: now, Session: []byte("y1")}); err != nil {
		t.Fatal(err)
	}
	// Nothing has reached the file yet.
	if inFile, _ := fullCount(t, s); inFile != 1 { // just "held"
		t.Fatalf("%d entries committed while commits were held", inFile)
	}
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20}, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, "x"); !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("deleted entry back after reopening: %v", err)
	}
	if e, err := s.Get(ctx, "y"); err != nil || string(e.Session) != "y1" {
		t.Errorf("entry lost across Close: %q %v", e.Session, err)
	}
}

func TestQueueIsBounded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "cache.db"), scache.Limits{MaxEntries: 10 * maxQueued, MaxBytes: 1 << 30}, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release := holdCommits(t, s)
	// Queued plus one batch in flight is all that may wait.
	const writes = maxQueued + maxBatch + 10
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for ; n < writes; n++ {
			if err := s.Put(ctx, fmt.Sprint("id", n), scache.Entry{Written: time.Now(), Session: []byte("s")}); err != nil {
				t.Errorf("Put %d: %v", n, err)
				break
			}
		}
		wrote <- n
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.wb.mu.Lock()
		queued := len(s.wb.queue)
		s.wb.mu.Unlock()
		if queued > maxQueued {
			t.Fatalf("queue grew to %d, bound %d", queued, maxQueued)
		}
		if queued == maxQueued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue stuck at %d", queued)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case n := <-wrote:
		t.Fatalf("the writer finished %d writes past a full queue", n)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if n := <-wrote; n != writes {
		t.Fatalf("writer stopped after %d", n)
	}
	if st, err := s.Stats(ctx); err != nil || st.Entries != writes {
		t.Fatalf("Stats after the queue drained: %+v, %v", st, err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "cache.db"), scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Put(ctx, "a", scache.Entry{Written: time.Now(), Session: []byte("a")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
}

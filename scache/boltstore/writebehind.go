package boltstore

import (
	"context"
	"sync"
	"time"
)

// Write-behind. A bbolt transaction costs tens of microseconds however
// little it changes, so a client that updates one entry at a time would
// wait for a whole commit per update. Instead Put and Delete queue their
// change and return; one committer writes everything queued in a single
// transaction as soon as the previous one is done (an asynchronous group
// commit). Get consults the queue first, so a client reads its own
// writes. The price: a process killed in the middle loses the changes of
// its last commit or so (well under a millisecond) — never the file's
// consistency, and never an entry that was not written. Bounds are
// applied when the changes are committed; Flush waits for that.

// maxQueued bounds the queue: a writer waits when the committer is this
// far behind, so memory stays bounded whatever the load.
const maxQueued = 4096

// maxBatch bounds one commit, so that a sweep batch waiting behind it is
// not held up for long.
const maxBatch = 512

type queuedWrite struct {
	id    string
	value []byte // encoded entry; nil deletes
	size  int64  // scache.Size of the entry
}

type writeBehind struct {
	mu       sync.Mutex
	changed  *sync.Cond              // signalled after every commit
	pending  map[string]*queuedWrite // newest queued write per id, until committed
	queue    []*queuedWrite          // not yet taken by the committer
	inFlight int                     // writes being committed
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopped  bool
	lastErr  time.Time // of the last commit error logged
}

func (s *Store) startWriteBehind() {
	wb := &s.wb
	wb.changed = sync.NewCond(&wb.mu)
	wb.pending = make(map[string]*queuedWrite)
	wb.wake = make(chan struct{}, 1)
	wb.stop = make(chan struct{})
	wb.done = make(chan struct{})
	go s.commitLoop()
}

// enqueue queues w, waiting while the queue is full.
func (s *Store) enqueue(w *queuedWrite) error {
	wb := &s.wb
	wb.mu.Lock()
	for len(wb.queue) >= maxQueued && !wb.stopped {
		wb.changed.Wait()
	}
	if wb.stopped {
		wb.mu.Unlock()
		return ErrClosed
	}
	wb.pending[w.id] = w
	wb.queue = append(wb.queue, w)
	wb.mu.Unlock()
	select {
	case wb.wake <- struct{}{}:
	default:
	}
	return nil
}

// queued returns the newest queued write for id, if any.
func (s *Store) queued(id string) (*queuedWrite, bool) {
	s.wb.mu.Lock()
	defer s.wb.mu.Unlock()
	w, ok := s.wb.pending[id]
	return w, ok
}

func (s *Store) commitLoop() {
	wb := &s.wb
	defer close(wb.done)
	for {
		select {
		case <-wb.wake:
		case <-wb.stop:
			s.commitQueued() // what is queued when Close came
			return
		}
		s.commitQueued()
	}
}

// commitQueued commits the queue, a batch per transaction, until it is
// empty.
func (s *Store) commitQueued() {
	wb := &s.wb
	for {
		wb.mu.Lock()
		n := min(len(wb.queue), maxBatch)
		batch := wb.queue[:n:n]
		wb.queue = wb.queue[n:]
		if len(wb.queue) == 0 {
			wb.queue = nil
		}
		wb.inFlight = n
		wb.mu.Unlock()
		if n == 0 {
			return
		}
		err := s.update(context.Background(), false, func(w *write) error {
			for _, q := range batch {
				var err error
				if q.value != nil {
					err = s.applyPut(w, []byte(q.id), q.value, q.size)
				} else {
					_, err = applyDelete(w, []byte(q.id))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		wb.mu.Lock()
		for _, q := range batch {
			if wb.pending[q.id] == q {
				delete(wb.pending, q.id)
			}
		}
		wb.inFlight = 0
		if err != nil && time.Since(wb.lastErr) > time.Minute {
			wb.lastErr = time.Now()
			s.log.Warn("session cache %s: %d changes lost: %v", s.path, len(batch), err)
		}
		wb.changed.Broadcast()
		wb.mu.Unlock()
	}
}

// Flush waits until every change queued before it is committed, and with
// it the bounds applied. Stats and Close flush first.
func (s *Store) Flush(ctx context.Context) error {
	wb := &s.wb
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for (len(wb.queue) > 0 || wb.inFlight > 0) && !wb.stopped {
		if err := ctx.Err(); err != nil {
			return err
		}
		wb.changed.Wait()
	}
	return nil
}

// stopWriteBehind commits what is queued and stops the committer.
func (s *Store) stopWriteBehind() {
	wb := &s.wb
	wb.mu.Lock()
	if wb.stopped {
		wb.mu.Unlock()
		return
	}
	wb.stopped = true // later writes fail with ErrClosed
	wb.changed.Broadcast()
	wb.mu.Unlock()
	close(wb.stop)
	<-wb.done
}

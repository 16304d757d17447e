package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
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
// applied when the changes are committed; Commit waits for that.
//
// Failed commits (a full disk). A change has been acknowledged by the time
// it is committed, so a failed commit must not drop it: its batch goes
// back to the head of the queue, where Get still finds it, and is retried
// with back-off. Until the whole backlog is committed, Put and Delete are
// refused with scache.ErrStoreFailing rather than acknowledge what may
// never be written; the backlog is bounded by the queue. An acknowledged
// change is lost only if the store is closed while commits still fail, or
// if bbolt rejects the change itself (validation rules that out); both are
// counted and logged. Warnings are rate-limited, each counting what
// happened since the previous one.
//
// bbolt stays consistent: a failed commit has not written the meta page,
// so the file still ends at the last good commit, and the rollback
// rebuilds the freelist by walking the tree (NoFreelistSync), so that the
// pages the failed commit wrote are free again. That walk reads the whole
// file, one more reason for the back-off.

// maxQueued bounds the queue: a writer waits when the committer is this
// far behind, so memory stays bounded whatever the load.
const maxQueued = 4096

// maxBatch bounds one commit, so that a sweep batch waiting behind it is
// not held up for long.
const maxBatch = 512

// Retry back-off and warning interval while commits fail; variables for
// the tests, read by Open.
var (
	retryMin  = time.Second
	retryMax  = 30 * time.Second // bounds how long writes stay refused once space returns
	warnEvery = time.Minute
)

type queuedWrite struct {
	id    string
	value []byte // encoded entry; nil deletes
	size  int64  // scache.Size of the entry
	// substitute marks a delete that stands in for a Put bbolt rejected,
	// so that an older entry does not come back; no caller waits for it.
	substitute bool
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

	outage             *outage // set while commits fail
	refused, lost      uint64  // since Open
	failedCommits      uint64  // since Open
	log                failureLog
	retryMin, retryMax time.Duration
	warnEvery          time.Duration
}

// outage is a run of failed commits, from the first until the backlog is
// committed.
type outage struct {
	err     error // of the latest failed commit
	since   time.Time
	backoff time.Duration
	retry   time.Time // next attempt
}

// failureLog is what happened since the last report, so that reports can
// be rate-limited without losing a count.
type failureLog struct {
	last      time.Time // of the last report
	announced bool      // the current outage has been reported
	failures  int       // failed commits
	refused   uint64
	lost      uint64
	lostWhy   error
	recovered bool          // an outage ended
	downFor   time.Duration // how long it lasted
	lastErr   error         // its last error
}

func (l *failureLog) empty() bool {
	return l.failures == 0 && l.refused == 0 && l.lost == 0 && !l.recovered
}

// report is a log line composed under the lock and written after it. Its
// format names the situation, so that the daemon's logger, which limits
// warnings per format, never drops one for another cause's flood.
type report struct {
	format string
	args   []any
	warn   bool
}

func (s *Store) emit(r report) {
	switch {
	case r.format == "":
	case !r.warn:
		maillog.Infof(s.log, r.format, r.args...)
	default:
		maillog.Warnf(s.log, r.format, r.args...)
	}
}

func (s *Store) startWriteBehind() {
	wb := &s.wb
	wb.changed = sync.NewCond(&wb.mu)
	wb.pending = make(map[string]*queuedWrite)
	wb.wake = make(chan struct{}, 1)
	wb.stop = make(chan struct{})
	wb.done = make(chan struct{})
	wb.retryMin, wb.retryMax, wb.warnEvery = retryMin, retryMax, warnEvery
	go s.commitLoop()
}

// enqueue queues w, waiting while the queue is full. While commits fail it
// refuses w instead.
func (s *Store) enqueue(w *queuedWrite) error {
	wb := &s.wb
	wb.mu.Lock()
	for len(wb.queue) >= maxQueued && !wb.stopped && wb.outage == nil {
		wb.changed.Wait()
	}
	if wb.stopped {
		wb.mu.Unlock()
		return ErrClosed
	}
	if o := wb.outage; o != nil {
		wb.refused++
		wb.log.refused++
		r := s.reportLocked(time.Now(), false)
		err := failingError(o)
		wb.mu.Unlock()
		s.emit(r)
		return err
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

func failingError(o *outage) error {
	return fmt.Errorf("%w: %w", scache.ErrStoreFailing, o.err)
}

// getQueued returns the newest queued write for id as an entry (found
// false for a delete), if there is one. It copies under the lock, so that
// a write's bytes can be wiped once it is done with.
func (s *Store) getQueued(id string) (e scache.Entry, found, ok bool) {
	s.wb.mu.Lock()
	defer s.wb.mu.Unlock()
	q, ok := s.wb.pending[id]
	if !ok || q.value == nil {
		return scache.Entry{}, false, ok
	}
	nanos, session, _ := decodeValue(stringBytes(id), q.value)
	return scache.Entry{Written: time.Unix(0, nanos), Session: bytes.Clone(session)}, true, true
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
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var due <-chan time.Time
		wb.mu.Lock()
		d, ok := wb.nextDeadline(time.Now())
		wb.mu.Unlock()
		if ok {
			timer.Reset(d)
			due = timer.C
		}
		select {
		case <-wb.wake:
		case <-due:
		case <-wb.stop:
			timer.Stop()
			s.commitQueued(true) // what is queued when Close came
			// The rate limit must not keep the last counts from the log.
			wb.mu.Lock()
			r := s.reportLocked(time.Now(), true)
			wb.mu.Unlock()
			s.emit(r)
			return
		}
		timer.Stop()
		s.commitQueued(false)
	}
}

// nextDeadline is when the committer must act without being woken: to
// retry after a failure, or to write a report the rate limit held back.
func (wb *writeBehind) nextDeadline(now time.Time) (time.Duration, bool) {
	var d time.Duration
	ok := false
	if wb.outage != nil && len(wb.queue) > 0 {
		d, ok = wb.outage.retry.Sub(now), true
	}
	if !wb.log.empty() {
		if w := wb.log.last.Add(wb.warnEvery).Sub(now); !ok || w < d {
			d, ok = w, true
		}
	}
	return max(d, 0), ok
}

// rejectedWrite is a change bbolt refused by itself, not the commit.
type rejectedWrite struct {
	q   *queuedWrite
	err error
}

func (e *rejectedWrite) Error() string { return e.err.Error() }

// commitQueued commits the queue, a batch per transaction, until it is
// empty or a commit fails. While commits fail it does nothing before the
// retry time, except when final (Close): then it tries once more and drops
// what cannot be committed.
func (s *Store) commitQueued(final bool) {
	wb := &s.wb
	for {
		wb.mu.Lock()
		now := time.Now()
		r := s.reportLocked(now, false)
		n := min(len(wb.queue), maxBatch)
		if n == 0 || wb.outage != nil && !final && now.Before(wb.outage.retry) {
			wb.mu.Unlock()
			s.emit(r)
			return
		}
		batch := wb.queue[:n:n]
		wb.queue = wb.queue[n:]
		if len(wb.queue) == 0 {
			wb.queue = nil
		}
		wb.inFlight = n
		wb.mu.Unlock()
		s.emit(r)
		r = report{}

		err := s.update(context.Background(), func(w *write) error {
			for _, q := range batch {
				var err error
				if q.value != nil {
					err = s.applyPut(w, []byte(q.id), q.value, q.size)
				} else {
					_, err = applyDelete(w, []byte(q.id))
				}
				if err != nil {
					return &rejectedWrite{q, err}
				}
			}
			if fault := s.commitFault.Load(); fault != nil {
				return *fault
			}
			return nil
		})

		wb.mu.Lock()
		wb.inFlight = 0
		now = time.Now()
		var rejected *rejectedWrite
		switch {
		case err == nil:
			for _, q := range batch {
				if wb.pending[q.id] == q {
					delete(wb.pending, q.id)
				}
				clear(q.value) // session bytes; the file has them now
			}
			if wb.outage != nil && len(wb.queue) == 0 {
				r = s.recoveredLocked(now)
			}
		case errors.As(err, &rejected):
			r = s.rejectedLocked(batch, rejected, now)
		default:
			// cap(batch) == n, so this copies: the batch goes back first.
			wb.queue = append(batch, wb.queue...)
			if final {
				r = s.dropQueueLocked(err, now)
			} else {
				r = s.failedLocked(err, now)
			}
		}
		wb.changed.Broadcast()
		wb.mu.Unlock()
		s.emit(r)
		if err != nil && rejected == nil {
			return
		}
	}
}

// failedLocked starts or extends an outage after a failed commit.
func (s *Store) failedLocked(err error, now time.Time) report {
	wb := &s.wb
	o := wb.outage
	if o == nil {
		o = &outage{since: now, backoff: wb.retryMin}
		wb.outage = o
		wb.log.announced = false
	} else {
		o.backoff = min(2*o.backoff, wb.retryMax)
	}
	o.err, o.retry = err, now.Add(o.backoff)
	wb.failedCommits++
	wb.log.failures++
	return s.reportLocked(now, false)
}

// recoveredLocked ends the outage once its backlog is committed. A reported
// outage has its end reported at once.
func (s *Store) recoveredLocked(now time.Time) report {
	wb := &s.wb
	o := wb.outage
	wb.outage = nil
	wb.log.recovered, wb.log.downFor, wb.log.lastErr = true, wb.log.downFor+now.Sub(o.since), o.err
	return s.reportLocked(now, wb.log.announced)
}

// rejectedLocked drops the write bbolt rejected and queues the rest of the
// batch again, to be committed at once. A rejected Put becomes a delete:
// the entry it replaced must not come back in its place.
func (s *Store) rejectedLocked(batch []*queuedWrite, r *rejectedWrite, now time.Time) report {
	wb := &s.wb
	q := r.q
	if !q.substitute {
		wb.lost++
		wb.log.lost++
		wb.log.lostWhy = r.err
	}
	rest := make([]*queuedWrite, 0, len(batch)+len(wb.queue))
	for _, b := range batch {
		switch {
		case b != q:
			rest = append(rest, b)
		case q.value != nil:
			sub := &queuedWrite{id: q.id, substitute: true}
			rest = append(rest, sub)
			if wb.pending[q.id] == q {
				wb.pending[q.id] = sub
			}
		case wb.pending[q.id] == q:
			delete(wb.pending, q.id)
		}
	}
	clear(q.value)
	wb.queue = append(rest, wb.queue...)
	return s.reportLocked(now, false)
}

// dropQueueLocked gives up on the backlog at Close, after its last
// commit failed. This is always reported.
func (s *Store) dropQueueLocked(err error, now time.Time) report {
	wb := &s.wb
	if wb.outage == nil {
		wb.outage = &outage{since: now}
	}
	wb.outage.err = err
	wb.failedCommits++
	wb.log.failures++
	for _, q := range wb.queue {
		if !q.substitute {
			wb.lost++
			wb.log.lost++
		}
		clear(q.value)
	}
	wb.log.lostWhy = err
	wb.queue = nil
	clear(wb.pending)
	return s.reportLocked(now, true)
}

// reportLocked composes the report of what happened since the last one,
// if there is anything and the rate limit (or force) allows.
func (s *Store) reportLocked(now time.Time, force bool) report {
	wb := &s.wb
	l := &wb.log
	if l.empty() || !force && !l.last.IsZero() && now.Sub(l.last) < wb.warnEvery {
		return report{}
	}
	var state string
	args := []any{s.path}
	o := wb.outage
	switch {
	case o != nil && wb.stopped:
		state = "closed while commits fail (%v)"
		args = append(args, o.err)
	case o != nil:
		state = "cannot commit changes (%v); updates and deletes are refused until a commit succeeds" +
			" (next try in %v; %d accepted changes wait in memory)"
		args = append(args, o.err, max(o.retry.Sub(now), 0).Round(time.Millisecond), len(wb.queue)+wb.inFlight)
	case l.recovered:
		state = "commits succeed again after failing for %v (%v)"
		args = append(args, l.downFor.Round(time.Millisecond), l.lastErr)
	default:
		state = "changes rejected by the database"
	}
	format := "session cache %s: " + state +
		"; since the last report: %d failed commits, %d updates and deletes refused, %d accepted changes lost"
	args = append(args, l.failures, l.refused, l.lost)
	if l.lost > 0 {
		format += " (%v)"
		args = append(args, l.lostWhy)
	}
	warn := o != nil || l.lost > 0
	*l = failureLog{last: now, announced: o != nil}
	return report{format: format, args: args, warn: warn}
}

// Commit waits until every change queued before it is committed, and with
// it the bounds applied (scache.Committer). Expire, Each and Stats call it
// first. While commits fail it returns at once with an error wrapping
// scache.ErrStoreFailing.
func (s *Store) Commit(ctx context.Context) error {
	wb := &s.wb
	wb.mu.Lock()
	defer wb.mu.Unlock()
	for (len(wb.queue) > 0 || wb.inFlight > 0) && !wb.stopped {
		if o := wb.outage; o != nil {
			return failingError(o)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		wb.changed.Wait()
	}
	return nil
}

// writeStats fills in what became of acknowledged changes.
func (s *Store) writeStats(st *scache.StoreStats) {
	wb := &s.wb
	wb.mu.Lock()
	defer wb.mu.Unlock()
	st.Pending = len(wb.queue) + wb.inFlight
	st.Failing = wb.outage != nil
	st.Refused, st.Lost = wb.refused, wb.lost
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

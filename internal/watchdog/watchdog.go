// Package watchdog is tlsmgr's daemon_timeout: as Postfix's daemons are
// killed by their built-in watchdog when one request takes longer than
// daemon_timeout, a Watchdog calls its fire function when a piece of work
// has been running for longer than its timeout, so that the daemon can log
// a fatal error and exit, and master(8) (or systemd) start a fresh one. A
// goroutine wedged on a dead disk or network file system cannot be
// stopped; a new process is the only cure.
//
// Work is watched two ways. Background tasks (a cache sweep, a PRNG
// exchange-file update, start-up, shutdown) call Start and the function it
// returns when done: a map entry each, as they are rare. Requests are too
// many for that: their server keeps each one's start time in an atomic
// word of its own and lends the Watchdog a Source that finds the oldest,
// so that a request pays a few atomic stores and no timer, and one
// goroutine scans everything at a fraction of the timeout.
package watchdog

import (
	"fmt"
	"sync"
	"time"
)

// Source reports the oldest piece of work in progress that its owner
// times itself: when it started (the zero time if nothing is in
// progress), and a function describing it, called only if the Watchdog
// fires. It is called from the Watchdog's goroutine at every check.
type Source func() (started time.Time, describe func() string)

// Error is what a Watchdog reports when it fires.
type Error struct {
	What    string        // the work that overran, e.g. "lookup request for the smtpd cache from conn 7 ..."
	Running time.Duration // how long it had been running
	Timeout time.Duration // the Watchdog's timeout
}

func (e *Error) Error() string {
	return fmt.Sprintf("watchdog timeout: %s still not done after %v (limit %v)",
		e.What, e.Running.Round(time.Millisecond), e.Timeout)
}

// Watchdog watches work for overruns. The nil *Watchdog watches nothing:
// its methods do nothing, so that "no daemon_timeout" needs no special
// case in its users.
type Watchdog struct {
	timeout time.Duration
	fire    func(*Error)
	now     func() time.Time

	mu      sync.Mutex
	tasks   map[*task]struct{}
	sources map[*Source]struct{}
	fired   bool

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

type task struct {
	what    string
	started time.Time
}

// Interval bounds: a Watchdog checks every twentieth of its timeout, so
// that it fires within 5% of it, but never more often than every
// minInterval (a short timeout in a test) nor less often than every
// maxInterval (a check is cheap, and being late is pointless).
const (
	minInterval = time.Millisecond
	maxInterval = time.Second
)

// New returns a Watchdog that calls fire, once, from a goroutine of its
// own, when a piece of work has been running for longer than timeout.
// Fire is expected to end the process; if it returns, the Watchdog stops
// watching. A timeout of zero or less means no watchdog: New returns nil.
func New(timeout time.Duration, fire func(*Error)) *Watchdog {
	if timeout <= 0 {
		return nil
	}
	w := &Watchdog{
		timeout: timeout,
		fire:    fire,
		now:     time.Now,
		tasks:   make(map[*task]struct{}),
		sources: make(map[*Source]struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go w.run(min(max(timeout/20, minInterval), maxInterval))
	return w
}

// Timeout is the limit the Watchdog enforces (zero for the nil one).
func (w *Watchdog) Timeout() time.Duration {
	if w == nil {
		return 0
	}
	return w.timeout
}

// Start watches a background task from now until done is called; what
// names it in the error. Done may be called more than once.
func (w *Watchdog) Start(what string) (done func()) {
	if w == nil {
		return func() {}
	}
	t := &task{what: what, started: w.now()}
	w.mu.Lock()
	w.tasks[t] = struct{}{}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.tasks, t)
		w.mu.Unlock()
	}
}

// Watch adds a source of work to check until remove is called.
func (w *Watchdog) Watch(src Source) (remove func()) {
	if w == nil {
		return func() {}
	}
	p := &src
	w.mu.Lock()
	w.sources[p] = struct{}{}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.sources, p)
		w.mu.Unlock()
	}
}

// Stop ends the watching and waits for the goroutine, unless that is the
// one calling (from fire).
func (w *Watchdog) Stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.stop) })
	w.mu.Lock()
	fired := w.fired
	w.mu.Unlock()
	if !fired {
		<-w.done
	}
}

func (w *Watchdog) run(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		if e := w.check(); e != nil {
			w.fire(e)
			return
		}
	}
}

// check returns the error to fire with, if the oldest work is overdue.
// Sources are called without w.mu held, so that they may take their own
// locks in any order.
func (w *Watchdog) check() *Error {
	var oldest time.Time
	var what func() string
	w.mu.Lock()
	for t := range w.tasks {
		if oldest.IsZero() || t.started.Before(oldest) {
			oldest, what = t.started, func() string { return t.what }
		}
	}
	sources := make([]Source, 0, len(w.sources))
	for p := range w.sources {
		sources = append(sources, *p)
	}
	w.mu.Unlock()
	for _, src := range sources {
		if started, describe := src(); !started.IsZero() && (oldest.IsZero() || started.Before(oldest)) {
			oldest, what = started, describe
		}
	}
	now := w.now()
	if oldest.IsZero() || now.Sub(oldest) <= w.timeout {
		return nil
	}
	w.mu.Lock()
	w.fired = true
	w.mu.Unlock()
	return &Error{What: what(), Running: now.Sub(oldest), Timeout: w.timeout}
}

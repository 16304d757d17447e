package watchdog

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// fired collects what a Watchdog reports, and when.
type fired struct {
	ch chan *Error
}

func newFired() *fired { return &fired{ch: make(chan *Error, 1)} }

func (f *fired) fire(e *Error) { f.ch <- e }

func (f *fired) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case e := <-f.ch:
		t.Fatalf("fired: %v", e)
	case <-time.After(within):
	}
}

func (f *fired) wait(t *testing.T, within time.Duration) *Error {
	t.Helper()
	select {
	case e := <-f.ch:
		return e
	case <-time.After(within):
		t.Fatalf("did not fire within %v", within)
		return nil
	}
}

func TestNilWatchesNothing(t *testing.T) {
	w := New(0, func(*Error) { t.Fatal("fired") })
	if w != nil {
		t.Fatal("New(0) is not nil")
	}
	w.Start("x")()
	w.Watch(func() (time.Time, func() string) { return time.Now().Add(-time.Hour), nil })()
	w.Stop()
	if w.Timeout() != 0 {
		t.Fatal("nil watchdog has a timeout")
	}
}

func TestTaskOverrun(t *testing.T) {
	const timeout = 300 * time.Millisecond
	late := testenv.WatchLateness(t)
	f := newFired()
	w := New(timeout, f.fire)
	defer w.Stop()
	// Tasks that end in time are forgotten (the margin is for a
	// loaded machine, where a sleep may end a good deal late).
	for range 5 {
		done := w.Start("quick task")
		time.Sleep(timeout / 30)
		done()
		done() // twice is harmless
	}
	f.none(t, 2*timeout)
	start := time.Now()
	w.Start("wedged task")
	e := f.wait(t, 10*timeout)
	took := time.Since(start)
	if e.What != "wedged task" || e.Timeout != timeout || e.Running <= timeout {
		t.Fatalf("fired with %+v", e)
	}
	// Checked every twentieth of the timeout; the margin is for a
	// loaded machine, plus the worst wake-up seen in this test.
	if bound := timeout + timeout/20 + 100*time.Millisecond + late.Late(); took < timeout || took > bound {
		t.Errorf("fired after %v, timeout %v, bound %v", took, timeout, bound)
	}
	if !strings.Contains(e.Error(), "watchdog timeout: wedged task still not done after") {
		t.Errorf("error text %q", e.Error())
	}
	f.none(t, 2*timeout) // once only
}

// A Source is asked at every check, and the oldest work is reported,
// whether a task's or a source's.
func TestSourceOverrun(t *testing.T) {
	const timeout = 100 * time.Millisecond
	f := newFired()
	w := New(timeout, f.fire)
	defer w.Stop()
	var since atomic.Pointer[time.Time]
	var calls atomic.Int64
	remove := w.Watch(func() (time.Time, func() string) {
		calls.Add(1)
		if p := since.Load(); p != nil {
			return *p, func() string { return "the request" }
		}
		return time.Time{}, nil
	})
	f.none(t, 2*timeout)
	if calls.Load() == 0 {
		t.Fatal("the source was never asked")
	}
	// Work in progress that started long ago: fires at the next check,
	// naming it rather than a younger task.
	done := w.Start("a younger task")
	defer done()
	old := time.Now().Add(-time.Hour)
	since.Store(&old)
	e := f.wait(t, 10*timeout) // at the next check, unless the machine is slow
	if e.What != "the request" || e.Running < time.Hour {
		t.Fatalf("fired with %+v", e)
	}
	remove()
}

func TestRemovedSourceAndStop(t *testing.T) {
	f := newFired()
	w := New(20*time.Millisecond, f.fire)
	remove := w.Watch(func() (time.Time, func() string) {
		return time.Now().Add(-time.Hour), func() string { return "gone" }
	})
	remove()
	f.none(t, 100*time.Millisecond)
	w.Start("after stop")
	w.Stop()
	f.none(t, 100*time.Millisecond)
	w.Stop() // twice is harmless
}

// Of several overdue tasks, the oldest is named: its time ran out first.
func TestOldestTaskNamed(t *testing.T) {
	const timeout = 200 * time.Millisecond
	f := newFired()
	w := New(timeout, f.fire)
	defer w.Stop()
	w.Start("first task")
	time.Sleep(timeout / 4)
	w.Start("second task")
	time.Sleep(timeout / 4)
	w.Start("third task")
	if e := f.wait(t, 10*timeout); e.What != "first task" {
		t.Fatalf("fired naming %q, want the first task", e.What)
	}
}

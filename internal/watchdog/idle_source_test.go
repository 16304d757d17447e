package watchdog

import (
	"testing"
	"time"
)

// TestTaskOverrunBesideIdleSource: a source with nothing in progress (a
// server with every client idle, as the daemon's almost always is) hides
// no overdue task: the task is named when its time is up.
func TestTaskOverrunBesideIdleSource(t *testing.T) {
	const timeout = 100 * time.Millisecond
	f := newFired()
	w := New(timeout, f.fire)
	defer w.Stop()
	defer w.Watch(func() (time.Time, func() string) { return time.Time{}, nil })()
	w.Start("wedged task")
	if e := f.wait(t, 10*time.Second); e.What != "wedged task" || e.Running <= timeout {
		t.Fatalf("fired with %+v", e)
	}
}

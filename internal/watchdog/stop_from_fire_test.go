package watchdog

import (
	"testing"
	"time"
)

// TestStopFromFire: fire may call Stop (a daemon shutting down on the
// watchdog's error stops it with everything else); Stop then returns at
// once instead of waiting for the goroutine that is calling it.
func TestStopFromFire(t *testing.T) {
	wch := make(chan *Watchdog, 1)
	stopped := make(chan *Error, 1)
	w := New(20*time.Millisecond, func(e *Error) {
		(<-wch).Stop()
		stopped <- e
	})
	wch <- w
	w.Start("wedged task")
	select {
	case e := <-stopped:
		if e.What != "wedged task" {
			t.Errorf("fired with %+v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stop called from fire did not return")
	}
	w.Stop() // and again, from elsewhere, after it fired
}

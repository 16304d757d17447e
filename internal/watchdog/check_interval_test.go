package watchdog

import (
	"sync/atomic"
	"testing"
	"time"
)

// countChecks watches a source with nothing in progress and returns how
// many checks asked it.
func countChecks(w *Watchdog) *atomic.Int64 {
	var n atomic.Int64
	w.Watch(func() (time.Time, func() string) { n.Add(1); return time.Time{}, nil })
	return &n
}

// TestCheckInterval: a Watchdog checks every twentieth of its timeout,
// and at least every second however long its timeout. The bounds leave
// a loaded machine a wide margin: the wrong interval is ten times, or
// sixty times, the right one.
func TestCheckInterval(t *testing.T) {
	t.Run("a twentieth", func(t *testing.T) {
		w := New(time.Second, func(e *Error) { t.Errorf("fired: %v", e) })
		defer w.Stop()
		n := countChecks(w)
		time.Sleep(2 * time.Second)
		// 40 checks at 50ms; 4 at 500ms.
		if got := n.Load(); got < 10 {
			t.Errorf("%d checks in 2s with a timeout of 1s, want about 40", got)
		}
	})
	t.Run("at most a second", func(t *testing.T) {
		w := New(time.Hour, func(e *Error) { t.Errorf("fired: %v", e) })
		defer w.Stop()
		n := countChecks(w)
		for deadline := time.Now().Add(15 * time.Second); n.Load() < 2; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d checks in 15s with a timeout of 1h, want one a second", n.Load())
			}
		}
	})
}

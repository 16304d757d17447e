package testenv

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Lateness measures, while a test runs, how late the runtime wakes a
// sleeping goroutine. On a loaded machine (load 17 has been seen in CI) a
// call that ends at its deadline returns that much later through no fault
// of the code under test: a paused Redis server's calls took 40ms against
// a 10ms deadline there. A bound on a call's duration may allow the worst
// lateness seen so far in the test: on an idle machine the bound is what
// it was, and it grows only by what the machine is measured to impose.
// The figure is logged when the test ends.
type Lateness struct {
	max  atomic.Int64
	stop chan struct{}
}

// WatchLateness starts measuring until t ends.
func WatchLateness(t testing.TB) *Lateness {
	l := &Lateness{stop: make(chan struct{})}
	var wg sync.WaitGroup
	// Several sleepers: a thread of the process may be kept off a core
	// while another runs, and the test's calls run on both.
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				time.Sleep(time.Millisecond)
				over := int64(time.Since(start) - time.Millisecond)
				for m := l.max.Load(); over > m && !l.max.CompareAndSwap(m, over); m = l.max.Load() {
				}
			}
		})
	}
	t.Cleanup(func() {
		close(l.stop)
		wg.Wait()
		t.Logf("worst lateness of a sleeping goroutine's wake-up: %v", l.Late())
	})
	return l
}

// Late is the worst lateness seen so far.
func (l *Lateness) Late() time.Duration { return time.Duration(l.max.Load()) }

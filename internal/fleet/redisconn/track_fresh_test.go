package redisconn

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// Tracking is on only while proved recently: when the tracker cannot
// prove it (here its goroutine is held in invalidate, which must not
// block, but a stalled process is the same), State turns off by itself,
// and on again once the tracker runs.
func TestTrackerStaleWhileStalled(t *testing.T) {
	srv := redistest.Single(t)
	held, release := make(chan struct{}), make(chan struct{})
	c, tr, _ := trackedClient(t, srv, "tt:", func(keys []string) {
		for _, k := range keys {
			if k == "tt:hold" {
				close(held)
				<-release
			}
		}
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	set(t, c, "tt:hold", "v")
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("invalidation of tt:hold not passed on")
	}
	trackEventually(t, "tracking off while the tracker is held", 10*time.Second, func() bool { _, on := tr.State(); return !on })
	close(release)
	released = true
	// The connections were never lost: the session may go on.
	trackEventually(t, "tracking on again", 15*time.Second, func() bool { _, on := tr.State(); return on })
}

package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// Each episode of a full write queue is logged, start and end, even when
// the queue drains before any further write is queued. Before, only an
// update that waited for room logged the end, and without it the next
// episode went unreported.
func TestQueueFullEpisodesLogged(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 10 * time.Second})
	t.Cleanup(srv.Resume)
	now := time.Now()
	for episode := 1; episode <= 2; episode++ {
		srv.Pause()
		for i := range writeQueue + 2*writeBatch + 10 {
			rctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			a.Put(rctx, fmt.Sprint("e", episode, "-", i), entry(now, "s"))
			cancel()
		}
		srv.Resume()
		// No write queued until the queue has drained.
		for deadline := time.Now().Add(10 * time.Second); len(a.writes) > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the queue did not drain")
			}
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			n, m := a.log.Count("warn", "writes are waiting for Redis"), a.log.Count("info", "room again")
			if n == episode && m == episode {
				break
			}
			if n > episode || m > episode || time.Now().After(deadline) {
				t.Fatalf("after episode %d: %d 'waiting' and %d 'room again' lines: %q", episode, n, m, a.log.Lines())
			}
		}
	}
}

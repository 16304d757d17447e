package redisconn

import (
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// Whichever of its two connections is lost (killed here; a proxy or a
// restart would do the same), Redis stops reporting changes through it:
// the tracker must notice, say so once, start a new session (a new epoch)
// and report changes again, saying it is back.
func TestTrackerConnectionKilled(t *testing.T) {
	for which, flag := range map[string]string{"tracking": "t", "subscriber": "P"} {
		t.Run(which, func(t *testing.T) {
			srv := redistest.Single(t)
			var rec trackRec
			c, tr, log := trackedClient(t, srv, "tt:", rec.invalidate)
			set(t, c, "tt:before", "v")
			trackEventually(t, "invalidation of tt:before", 10*time.Second, func() bool { return rec.seen("tt:before") })
			e := tr.Epoch()
			if n := srv.KillClients(t, flag); n != 1 {
				t.Fatalf("%d %s connections killed, want 1", n, which)
			}
			trackEventually(t, "a new session", 15*time.Second, func() bool {
				_, on := tr.State()
				return on && tr.Epoch() > e
			})
			// Changes are reported again: keep changing a key until one is
			// (a change made just before the new session is not reported).
			for i := 0; ; i++ {
				k := fmt.Sprintf("tt:after-%d", i)
				set(t, c, k, "v")
				deadline := time.Now().Add(time.Second)
				for !rec.seen(k) && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if rec.seen(k) {
					break
				}
				if i == 10 {
					t.Fatalf("no change reported after the %s connection was killed", which)
				}
			}
			if n := log.Count("warn", "invalidation tracking lost"); n != 1 {
				t.Errorf("%d warnings of the loss, want 1; log:\n%s", n, log)
			}
			if n := log.Count("info", "invalidation tracking on again"); n != 1 {
				t.Errorf("%d notices of the return, want 1; log:\n%s", n, log)
			}
		})
	}
}

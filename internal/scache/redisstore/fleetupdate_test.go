package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// A member's earlier updates of an id, once their fate is known (landed
// and superseded, or never shared), are not mistaken for what another
// member writes later: however many the member made, one at a time, the
// fleet's later update of the id is what it reads next.
func TestFleetUpdateSeenAfterManyOwnUpdates(t *testing.T) {
	srv := redistest.Single(t)
	for _, c := range []struct {
		name   string
		update func(a *member, i int)
	}{
		// Two at a time: the first is still queued when the second is
		// acknowledged; both land.
		{"shared-in-pairs", func(a *member, i int) {
			for j := range 2 {
				if err := a.Put(ctx, "id", entry(time.Now(), fmt.Sprint("a", i, j))); err != nil {
					t.Fatal(err)
				}
			}
			settle(t, a)
		}},
		// Never shared: the request's deadline had passed.
		{"unshared", func(a *member, i int) {
			done, cancel := context.WithCancel(ctx)
			cancel()
			if err := a.Put(done, "id", entry(time.Now(), fmt.Sprint("a", i))); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			prefix := c.name + ":"
			a := newMember(t, conf{addrs: []string{srv.Addr}, prefix: prefix})
			b := newMember(t, conf{addrs: []string{srv.Addr}, prefix: prefix})
			waitTracking(t, a)
			waitTracking(t, b)
			for i := range 4 * maxStale {
				c.update(a, i)
			}
			settle(t, a)
			put(t, b, "id", time.Now().Add(time.Hour), []byte("fleet"))
			deadline := time.Now().Add(10 * time.Second)
			for {
				settle(t, a)
				got := lookup(a, "id")
				if got == "fleet" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a still answers %q 10 s after another member's later update; stats %+v", got, a.FleetStats())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

package redisstore

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// Unproved counts own updates not yet seen to hold in Redis: one that
// landed while tracking was off (so that nothing could prove it) stays
// counted, and is not answered by an outage, until tracking is back and
// revalidate proves it.
func TestUnprovedGauge(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}, timeout: 100 * time.Millisecond})
	waitTracking(t, a)
	now := time.Now()
	until := func(what string, limit time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; stats %+v", what, limit, a.FleetStats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	putShared(t, a, "proved", now, []byte("p"))
	until("nothing unproved", 5*time.Second, func() bool { return a.FleetStats().Unproved == 0 })

	// Tracking goes (the subscriber is black-holed); the writes still land.
	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	waitSessionEnded(t, a)
	put(t, a, "landed", now, []byte("l"))
	r := srv.Client(t)
	until("the update in Redis", 5*time.Second, func() bool { return r.Exists(ctx, a.writeKey("landed")).Val() == 1 })
	until("the update counted", 5*time.Second, func() bool { return a.FleetStats().Unproved == 1 })
	time.Sleep(300 * time.Millisecond) // revalidate's ticks pass: nothing to prove with
	if n := a.FleetStats().Unproved; n != 1 || a.verified("landed") {
		t.Fatalf("with tracking off: %d unproved, verified %v; want 1, false", n, a.verified("landed"))
	}

	px.Restore()
	waitTracking(t, a)
	until("the update proved", 10*time.Second, func() bool { return a.FleetStats().Unproved == 0 && a.verified("landed") })
}

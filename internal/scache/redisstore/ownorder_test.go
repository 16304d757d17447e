package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// An invalidation that reaches a member after it acknowledged an update,
// but reports a change Redis made before (it was on its way), does not
// make Redis's value newer than the update: the member, whose update
// Redis refused, goes on reading its own, not the older value.
func TestLateInvalidationOfEarlierChange(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	putShared(t, a, "id", now, []byte("v0"))

	// a's invalidations are held on their way.
	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	put(t, b, "id", now.Add(time.Second), []byte("older"))
	// Then a's update, which Redis refuses.
	if err := r.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ConfigSet(ctx, "maxmemory", "0") })
	if err := a.Put(ctx, "id", entry(now.Add(2*time.Second), "v1")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); a.FleetStats().UpdatesUnshared == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the update was not refused: %+v", a.FleetStats())
		}
	}
	// The invalidation of b's change arrives now.
	px.Restore()
	if err := r.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	waitTracking(t, a)
	for range 20 {
		settle(t, a)
		if got := lookup(a, "id"); got != "v1" {
			t.Fatalf("Get(id) = %q, want a's own v1: %q was in Redis before a acknowledged v1; stats %+v", got, got, a.FleetStats())
		}
	}
}

// An own update Redis refused or never got stays the member's answer in
// an outage after a tracking gap, when what Redis holds is one of the
// member's earlier updates it remembers, or nothing: revalidate knows
// those as older, and keeps the copy clean. Where Redis holds a value
// that may be a forgotten own one or another member's, it does not.
func TestUnsharedOwnUpdateServedAfterTrackingGap(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}, timeout: 100 * time.Millisecond})
	waitTracking(t, a)
	now := time.Now()
	putShared(t, a, "ctl", now, []byte("ctl"))
	putShared(t, a, "one", now, []byte("one v0"))

	// "many": more updates Redis never answers than are remembered one
	// by one, then one that lands.
	unpause := pauseWrites(t, r, time.Minute)
	for i := 1; i <= maxStale+1; i++ {
		unshared := a.FleetStats().UpdatesUnshared
		if err := a.Put(ctx, "many", entry(now.Add(time.Duration(i)), fmt.Sprint("many v", i))); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); a.FleetStats().UpdatesUnshared == unshared; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("update %d of many not timed out: %+v", i, a.FleetStats())
			}
		}
		// A read that Redis answers keeps the breaker closed.
		wantAnswer(t, a, "many", now.Add(time.Duration(i)), []byte(fmt.Sprint("many v", i)))
	}
	unpause()
	put(t, a, "many", now.Add(time.Minute), []byte("many landed"))
	if err := r.Get(ctx, a.writeKey("many")).Err(); err != nil {
		t.Fatalf("the last update of many is not in Redis: %v", err)
	}

	// Then Redis refuses the next update of each.
	if err := r.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ConfigSet(ctx, "maxmemory", "0") })
	unshared := a.FleetStats().UpdatesUnshared
	put(t, a, "one", now.Add(time.Hour), []byte("one v1"))
	put(t, a, "many", now.Add(time.Hour), []byte("many refused"))
	if got := a.FleetStats().UpdatesUnshared - unshared; got != 2 {
		t.Fatalf("%d updates refused, want 2: %+v", got, a.FleetStats())
	}
	if err := r.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// And an update never sent (its request's deadline had passed) of
	// an id Redis does not hold.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Put(done, "unsent", entry(now, "unsent v1")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ctl": "ctl", "one": "one v1", "many": "many refused", "unsent": "unsent v1"}
	for id, w := range want {
		if got := lookup(a, id); got != w {
			t.Fatalf("Get(%s) = %q, want %q", id, got, w)
		}
	}

	// A tracking gap: the copies are proved again in the next session.
	px.BlackHoleWhere(redistest.Contains("subscribe"))
	waitSessionEnded(t, a)
	gap := a.tracker.Epoch()
	px.Restore()
	waitProvedAfter(t, a, "ctl", gap)

	// "many": Redis holds its landed update, whose tag was forgotten
	// behind the unanswered ones, and tracking had a gap, in which another
	// member may have changed it: Redis's value may be older than the
	// refused update, or newer. Neither may answer: a miss.
	want["many"] = ""
	px.BlackHole()
	start := time.Now()
	for st := a.FleetStats(); time.Since(start) < time.Second || st.Backend.State == redisconn.StateUp; st = a.FleetStats() {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("a still has Redis %s 15 s into the black hole", st.Backend.State)
		}
		for id, w := range want {
			if got := lookup(a, id); got != w {
				t.Fatalf("%v into the black hole, Get(%s) = %q, want %q", time.Since(start).Round(time.Millisecond), id, got, w)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.FleetStats(); st.FallbackHits == 0 {
		t.Errorf("no lookup was answered by the fallback: %+v", st)
	}
}

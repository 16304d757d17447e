package redisstore

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// A lookup Redis answers with a miss while tracking is off (the delete
// went unreported) spoils the local copy: an outage that follows, before
// tracking is back to prove the copies again, does not serve the session
// that lookup showed gone.
func TestMissSeenWhileTrackingOffSpoilsCopy(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}, timeout: 100 * time.Millisecond})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	put(t, b, "read", now, []byte("read v1"))
	readTrusted(t, a, "read", "read v1")
	putShared(t, a, "own", now, []byte("own v1"))

	// a's subscriber stops answering: its tracking goes (and stays off:
	// a new subscriber is black-holed too), its other connections work.
	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	waitSessionEnded(t, a)
	for _, id := range []string{"read", "own"} {
		if ok, err := b.Delete(ctx, id); !ok || err != nil {
			t.Fatalf("b.Delete(%s) = %v, %v", id, ok, err)
		}
		// Redis answers a: the entry is gone.
		wantAnswer(t, a, id, now, nil)
	}

	px.BlackHole()
	start := time.Now()
	for st := a.FleetStats(); time.Since(start) < time.Second || st.Backend.State == redisconn.StateUp; st = a.FleetStats() {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("a still has Redis %s 15 s into the black hole", st.Backend.State)
		}
		for _, id := range []string{"read", "own"} {
			if got := lookup(a, id); got != "" {
				t.Fatalf("%v into the black hole, Get(%s) = %q: a serves what Redis told it was deleted", time.Since(start).Round(time.Millisecond), id, got)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.FleetStats(); st.FallbackMisses == 0 {
		t.Errorf("no lookup reached the fallback: %+v", st)
	}
}

// An own update that landed while tracking was off is proved once it is
// back, against what Redis holds: when another member replaced it in
// the meantime, the member's copy is not made trusted, and it reads the
// replacement.
func TestUnprovedOwnUpdateReplacedDuringGap(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()

	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	waitSessionEnded(t, a)
	// a's update lands, unproved (no tracking); b replaces it.
	put(t, a, "id", now, []byte("a's"))
	a.wantRedisOnly(t)
	put(t, b, "id", now.Add(time.Second), []byte("b's"))
	px.Restore()
	waitTracking(t, a)
	// revalidate has had its turns.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		a.tmu.Lock()
		_, unproved := a.unproved[a.writeKey("id")]
		a.tmu.Unlock()
		if !unproved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a's update still unproved 10 s after tracking came back")
		}
	}
	for range 10 {
		wantEntry(t, a, "id", now.Add(time.Second), []byte("b's"))
	}
}

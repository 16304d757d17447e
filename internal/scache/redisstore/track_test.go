package redisstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

func entry(written time.Time, session string) scache.Entry {
	return scache.Entry{Written: written, Expires: time.Now().Add(time.Hour), Session: []byte(session)}
}

// waitTracking waits until m's tracker is on.
func waitTracking(t *testing.T, m *member) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.FleetStats().Tracking != "on" {
		if time.Now().After(deadline) {
			t.Fatalf("tracking still %s after 10s", m.FleetStats().Tracking)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSessionEnded waits until m's tracking session has ended (not only
// gone stale: what the subscriber holds would still arrive, in order,
// once its link is back), after its subscriber stopped answering.
func waitSessionEnded(t *testing.T, m *member) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if gen, _ := m.tracker.State(); !tracking(gen) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the tracking session still on 5 s after its subscriber stopped answering")
		}
	}
}

// waitProvedAfter waits until m's copy of id is clean in a tracking epoch
// after gap: revalidate has proved it against Redis in a new session.
func waitProvedAfter(t *testing.T, m *member, id string, gap uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		m.tmu.Lock()
		sl := m.slots[m.writeKey(id)]
		proved := sl != nil && sl.clean && sl.cleanEpoch > gap
		m.tmu.Unlock()
		if proved {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copies not proved again 10 s after tracking came back; tracking %s", m.FleetStats().Tracking)
		}
	}
}

// eventually polls m until a lookup of id returns want ("" for a miss):
// after a tracking connection is cut, the member may answer from its copy
// until the tracker notices, but never for long.
func eventually(t *testing.T, m *member, id, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		e, err := m.Get(ctx, id)
		got := string(e.Session)
		if err != nil {
			got = ""
		}
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("Get(%q) = %q after %v, want %q", id, got, limit, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A lookup Redis answered while tracking is on leaves a copy that answers
// the next lookups without Redis, until Redis reports a change: through
// another member, another client, a flush; and tracking cut off is
// noticed and set up again.
func TestTrackedLookups(t *testing.T) {
	srv := redistest.Single(t)
	c := conf{addrs: []string{srv.Addr}}
	a, b := newMember(t, c), newMember(t, c)
	waitTracking(t, a)
	waitTracking(t, b)
	r := srv.Client(t)
	now := time.Now()

	put(t, a, "id", now, []byte("v1"))
	wantEntry(t, b, "id", now, []byte("v1"))
	ops := b.FleetStats().Backend.Ops
	for range 10 {
		wantEntry(t, b, "id", now, []byte("v1"))
	}
	if st := b.FleetStats(); st.LocalHits != 10 || st.Backend.Ops != ops {
		t.Fatalf("10 lookups of an unchanged entry: %d local hits, %d Redis calls; want 10 and 0", st.LocalHits, st.Backend.Ops-ops)
	}

	// An update through a: b's copy is dropped, the next lookup asks
	// Redis and trusts the new value.
	put(t, a, "id", now.Add(time.Second), []byte("v2"))
	wantEntry(t, b, "id", now.Add(time.Second), []byte("v2"))
	wantEntry(t, b, "id", now.Add(time.Second), []byte("v2"))
	if st := b.FleetStats(); st.LocalHits != 11 {
		t.Errorf("local hits %d, want 11: the new value is trusted again", st.LocalHits)
	}
	// A delete through a.
	if ok, err := a.Delete(ctx, "id"); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	wantMiss(t, b, "id")

	// Changes Redis makes or another client makes count the same.
	put(t, a, "other", now, []byte("o"))
	wantEntry(t, b, "other", now, []byte("o"))
	if err := r.Del(ctx, a.writeKey("other")).Err(); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, b, "other")
	put(t, a, "flushed", now, []byte("f"))
	wantEntry(t, b, "flushed", now, []byte("f"))
	wantEntry(t, b, "flushed", now, []byte("f"))
	if err := r.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, b, "flushed")
	if st := b.FleetStats(); st.Tracking != "on" {
		t.Errorf("tracking %s after FLUSHALL", st.Tracking)
	}
	put(t, a, "brief", now, []byte("b"))
	wantEntry(t, b, "brief", now, []byte("b"))
	if err := r.PExpire(ctx, a.writeKey("brief"), time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, b, "brief", "", 5*time.Second)

	// Cut either tracking connection: b may answer from its copy until
	// its tracker notices (a heartbeat or two), then asks Redis.
	for _, conn := range []struct{ name, flag string }{{"subscriber", "P"}, {"tracking", "t"}} {
		id := "cut-" + conn.name
		waitTracking(t, a)
		waitTracking(t, b)
		put(t, a, id, now, []byte("before"))
		wantEntry(t, b, id, now, []byte("before"))
		wantEntry(t, b, id, now, []byte("before"))
		killed := srv.KillClients(t, conn.flag)
		if killed == 0 {
			t.Fatalf("no %s connection to cut", conn.name)
		}
		if err := r.Set(ctx, a.writeKey(id), "not a sealed value", 0).Err(); err != nil {
			t.Fatal(err)
		}
		d := eventually(t, b, id, "", 5*time.Second)
		t.Logf("%s connections cut (%d): the change is seen after %v", conn.name, killed, d)
		waitTracking(t, b)
		put(t, a, id, now, []byte("after"))
		wantEntry(t, b, id, now, []byte("after"))
		local := b.FleetStats().LocalHits
		wantEntry(t, b, id, now, []byte("after"))
		if b.FleetStats().LocalHits != local+1 {
			t.Errorf("after %s connections were cut, tracking is not trusted again", conn.name)
		}
	}
}

// Updates are acknowledged before Redis has them and reach it in order,
// in pipelines; a full queue is counted and logged, never silent.
func TestWritesBehind(t *testing.T) {
	l := watchLateness(t)
	srv := redistest.Single(t)
	// A timeout longer than the paused part below can take on a loaded
	// machine: the writes held by the paused server must not time out
	// (and count as unshared) while the queue is being filled.
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 10 * time.Second})
	r := srv.Client(t)
	now := time.Now()
	ops := a.FleetStats().Backend.Ops
	const n = 500
	for i := range n {
		e := entry(now, fmt.Sprint("s", i))
		if err := a.Put(ctx, fmt.Sprint("id", i), e); err != nil {
			t.Fatal(err)
		}
	}
	// An update and a delete of one id, in that order, end deleted.
	if err := a.Put(ctx, "gone", entry(now, "g")); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Delete(ctx, "gone"); !ok || err != nil {
		t.Errorf("Delete right after Put = %v, %v; want true", ok, err)
	}
	settle(t, a)
	if got := r.DBSize(ctx).Val(); got != n {
		t.Errorf("%d keys in Redis, want %d", got, n)
	}
	calls := a.FleetStats().Backend.Ops - ops
	t.Logf("%d updates and a delete in %d Redis calls", n+1, calls)
	if calls >= n {
		t.Errorf("%d Redis calls for %d updates: not pipelined", calls, n)
	}
	a.wantRedisOnly(t)

	// Redis stuck inside the deadline of a patient member: the queue
	// fills, updates wait for room within their request's deadline, the
	// rest is counted and logged once.
	srv.Pause()
	t.Cleanup(srv.Resume)
	const more = writeQueue + 2*writeBatch + 100
	var slowest time.Duration
	for i := range more {
		rctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		start := time.Now()
		if err := a.Put(rctx, fmt.Sprint("more", i), entry(now, "m")); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
		cancel()
	}
	t.Logf("slowest update with the queue full: %v (request deadline 1ms)", slowest)
	if slowest > time.Millisecond+l.slack() {
		t.Errorf("an update waited %v for room, past its request's deadline", slowest)
	}
	unshared := a.FleetStats().UpdatesUnshared
	srv.Resume()
	settle(t, a)
	if err := a.Put(ctx, "after", entry(now, "a")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d updates with Redis paused: %d not shared", more, unshared)
	if unshared < more-writeQueue-writeBatch || unshared > more-writeQueue {
		t.Errorf("%d unshared updates, want between %d and %d", unshared, more-writeQueue-writeBatch, more-writeQueue)
	}
	// The queue's two transitions; and, on a machine loaded enough that
	// an update's 1ms passed before it was even queued, the report of
	// that one. The second is logged by the writer once it has drained
	// the queue, which may be a moment after the last Put returns.
	for deadline := time.Now().Add(5 * time.Second); !a.log.Has("room again") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	var lines []testlog.Line
	for _, l := range a.log.Lines() {
		if !strings.Contains(l.Text, "an update not shared with the fleet (the request's deadline had passed)") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[0].Text, "writes are waiting for Redis") || lines[0].Level != "warn" ||
		!strings.Contains(lines[1].Text, "room again") || lines[1].Level != "info" {
		t.Errorf("log %q, want the queue's two transitions", a.log.Lines())
	}
}

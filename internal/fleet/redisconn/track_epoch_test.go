package redisconn

import (
	"context"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// The epoch numbers sessions: it changes when a session starts, not when
// one is lost; a pause longer than the tracker's patience ends the session
// (unanswered pings), so the one after it is a new epoch; and while no
// session runs, or one ends before the fence is passed, Fence is false.
func TestTrackerEpochPerSession(t *testing.T) {
	srv := redistest.Single(t)
	var rec trackRec
	_, tr, _ := trackedClient(t, srv, "tt:", rec.invalidate)
	gen, _ := tr.State()
	e := tr.Epoch()
	if e == 0 {
		t.Fatalf("epoch 0 with tracking on")
	}

	paused(t, srv)
	// Begun while the session still runs, ended with it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if tr.Fence(ctx) {
		t.Error("Fence passed while Redis is paused")
	}
	cancel()
	trackEventually(t, "tracking off with Redis paused", 10*time.Second, func() bool { _, on := tr.State(); return !on })
	if got := tr.Epoch(); got != e {
		t.Errorf("epoch %d with tracking lost, want %d still: only a new session changes it", got, e)
	}
	// Between sessions, and while a new one cannot start, for a while.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		passed := tr.Fence(ctx)
		cancel()
		if passed {
			t.Fatal("Fence passed with Redis paused")
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		err := tr.Sync(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Sync with no session: %v, want nil at once", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := tr.Epoch(); got != e {
		t.Errorf("epoch %d while paused, want %d", got, e)
	}

	srv.Resume()
	trackEventually(t, "tracking on again", 15*time.Second, func() bool { _, on := tr.State(); return on })
	if got, _ := tr.State(); got == gen {
		t.Errorf("generation %d after the session was lost, the same as before", got)
	}
	if got := tr.Epoch(); got <= e {
		t.Errorf("epoch %d after a new session, want more than %d", got, e)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !tr.Fence(ctx) {
		t.Error("Fence not passed with tracking on again")
	}
}

// With Redis healthy a session lasts: quiet heartbeats are not failures.
func TestTrackerSessionLasts(t *testing.T) {
	srv := redistest.Single(t)
	var rec trackRec
	_, tr, _ := trackedClient(t, srv, "tt:", rec.invalidate)
	e := tr.Epoch()
	// Twelve heartbeats. A loaded machine may, rarely, lose one session
	// (an answer later than a second); never more.
	time.Sleep(3 * time.Second)
	if got := tr.Epoch(); got > e+1 {
		t.Errorf("epoch %d after 3 s of a healthy Redis, from %d: sessions keep ending", got, e)
	}
}

// Mark's fence is of pings sent after the call: it is not passed at once,
// and it is passed once the next round's answer has come.
func TestTrackerMarkNotPassedAtOnce(t *testing.T) {
	srv := redistest.Single(t)
	var rec trackRec
	_, tr, _ := trackedClient(t, srv, "tt:", rec.invalidate)
	if tr.Passed(0) {
		t.Error("Passed(0)")
	}
	at := 0
	const tries = 200
	for range tries {
		if tr.Passed(tr.Mark()) {
			at++
		}
		time.Sleep(time.Millisecond)
	}
	// A ping sent and answered between the two calls could pass one.
	if at > tries/10 {
		t.Errorf("%d of %d marks passed at once", at, tries)
	}
	m := tr.Mark()
	trackEventually(t, "the mark passed", 10*time.Second, func() bool { return tr.Passed(m) })
	var nilTracker *Tracker
	if nilTracker.Mark() != 0 || nilTracker.Passed(1) || nilTracker.Fence(context.Background()) || nilTracker.Epoch() != 0 {
		t.Error("a nil Tracker (a cluster's) must report no tracking")
	}
}

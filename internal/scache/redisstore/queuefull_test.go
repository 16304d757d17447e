package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// An update that finds the write queue full is kept locally, and only
// until the fleet changes the entry: once Redis is back, another
// member's later update of it is what this member reads.
func TestUpdateNotQueuedGivesWayToTheFleet(t *testing.T) {
	srv := redistest.Single(t)
	// Patient: the writes held by the stopped server do not time out
	// while the queue is filled.
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 10 * time.Second})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	put(t, a, "id", now, []byte("v0"))

	srv.Pause()
	t.Cleanup(srv.Resume)
	// An update with a request deadline of a millisecond.
	update := func(id string, e scache.Entry) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		if err := a.Put(rctx, id, e); err != nil {
			t.Fatalf("Put(%s): %v", id, err)
		}
	}
	for i := range writeQueue + 2*writeBatch + 10 {
		update(fmt.Sprint("fill-", i), entry(now, "f"))
	}
	unshared := a.FleetStats().UpdatesUnshared
	if unshared == 0 {
		t.Fatalf("the write queue never filled: %+v", a.FleetStats())
	}
	update("id", entry(now.Add(time.Second), "v1"))
	if got := a.FleetStats().UpdatesUnshared; got != unshared+1 {
		t.Fatalf("the update of id found room in the queue (%d unshared, was %d)", got, unshared)
	}
	srv.Resume()
	untilUp(t, a, 15*time.Second)
	waitTracking(t, a)
	settle(t, a)

	put(t, b, "id", now.Add(time.Minute), []byte("fleet"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(t, a)
		got := lookup(a, "id")
		if got == "fleet" {
			break
		}
		if got != "v1" && got != "" {
			t.Fatalf("Get(id) = %q, want v1 until the fleet's update is seen, then fleet", got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a still answers %q 10 s after another member's update; stats %+v", got, a.FleetStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

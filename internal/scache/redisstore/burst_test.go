package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// A burst of more than maxStale updates of one id, all shared, then
// another member's later update: the first member must see it. Before,
// the burst left the slot unable to tell any value from a forgotten own
// one, and the member answered its own old copy for as long as it kept
// the slot.
func TestBurstOfOneIDThenFleetUpdate(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	for i := range maxStale + 2 {
		if err := a.Put(ctx, "id", entry(now.Add(time.Duration(i)), fmt.Sprint("a", i))); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, a)
	a.wantRedisOnly(t)
	wantEntry(t, b, "id", now.Add(maxStale+1), []byte(fmt.Sprint("a", maxStale+1)))
	put(t, b, "id", now.Add(time.Minute), []byte("fleet"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(t, a)
		got := lookup(a, "id")
		if got == "fleet" {
			return
		}
		if time.Now().After(deadline) {
			a.tmu.Lock()
			sl := a.slots[a.writeKey("id")]
			t.Logf("slot: stale %d staleFull %v own %+v", len(sl.stale), sl.staleFull, *sl.own)
			a.tmu.Unlock()
			t.Fatalf("a still answers %q 10 s after b's later update; stats %+v", got, a.FleetStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Where a forgotten own write may still land and a change was reported
// after the latest own write, Redis's value may be older than the own
// copy and the own copy may have been replaced: the answer is a miss,
// neither of them. Without that doubt the own copy answers.
func TestForgottenOwnWriteAndFleetChangeIsAMiss(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	now := time.Now()
	putShared(t, a, "id", now, []byte("own"))
	key := a.writeKey("id")
	answer := func(newer bool) (scache.Entry, error, bool) {
		a.tmu.Lock()
		sl := a.slots[key]
		sl.staleFull, sl.own.newer, sl.own.settled = true, newer, false
		a.tmu.Unlock()
		rr := readResult{e: entry(now, "redis's"), found: true, first: true, present: true, tag: tag{1}}
		return a.settle(ctx, key, "id", a.beforeRead(key), rr)
	}
	if e, err, local := answer(true); err != scache.ErrNotFound || local {
		t.Errorf("in doubt, after a change: %q, %v, local %v; want a miss", e.Session, err, local)
	}
	if e, err, local := answer(false); err != nil || !local || string(e.Session) != "own" {
		t.Errorf("in doubt, nothing reported since: %q, %v, local %v; want the own copy", e.Session, err, local)
	}
}

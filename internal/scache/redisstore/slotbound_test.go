package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// The bound on the slots never forgets an update on its way to Redis,
// even once the bounded local cache has let its copy go: a lookup of it
// meanwhile is not answered by the older value Redis still holds.
func TestSlotOfQueuedUpdateKept(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	lim := scache.Limits{MaxEntries: 2, MaxBytes: 1 << 20}
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 10 * time.Second, lim: lim})
	now := time.Now()
	put(t, a, "id", now, []byte("v0"))

	// Writes wait (reads go on) until the pause ends.
	pauseWrites(t, r, 3*time.Second)
	start := time.Now()
	if err := a.Put(ctx, "id", entry(now.Add(time.Second), "v1")); err != nil {
		t.Fatal(err)
	}
	// More updates than the slots' bound, each a slot with a write on
	// its way; the local cache keeps the two written last.
	for i := range 4 * maxSlots(lim) {
		if err := a.Put(ctx, fmt.Sprint("other-", i), entry(now.Add(time.Minute), "o")); err != nil {
			t.Fatal(err)
		}
	}
	if a.localHas("id") {
		t.Fatal("test bug: the local cache still has id")
	}
	got := lookup(a, "id")
	if time.Since(start) > 2*time.Second {
		t.Skip("too slow a machine: the pause may have ended before the lookup")
	}
	if got == "v0" {
		t.Fatalf("Get(id) = %q while a's v1 is on its way: an older value than one acknowledged", got)
	}
}

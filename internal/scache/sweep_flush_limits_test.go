package scache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
)

// TestSweepKeepsLiveEntries: the sweep removes exactly what Lookup would
// call expired (written + timeout < now), never an entry that is still
// live, however close to its end.
func TestSweepKeepsLiveEntries(t *testing.T) {
	f := newCache(t, nil) // timeout one hour
	f.update(t, "oldest", "s")
	f.clk.Advance(10 * time.Minute)
	f.update(t, "older", "s")
	f.clk.Advance(20 * time.Minute)
	f.update(t, "newer", "s")

	// "oldest" is at its very last live instant, the others younger.
	f.clk.Set(t0.Add(time.Hour))
	n, err := f.c.Sweep(bg)
	if err != nil || n != 0 {
		t.Fatalf("Sweep at the oldest entry's last live instant = %d, %v; want 0 removed", n, err)
	}
	for _, id := range []string{"oldest", "older", "newer"} {
		if _, err := f.c.Lookup(bg, id); err != nil {
			t.Fatalf("Lookup(%s) after a sweep that should keep it: %v", id, err)
		}
	}

	// One nanosecond later only "oldest" has expired.
	f.clk.Set(t0.Add(time.Hour + time.Nanosecond))
	if n, err := f.c.Sweep(bg); err != nil || n != 1 {
		t.Fatalf("Sweep one ns later = %d, %v; want 1 removed", n, err)
	}
	if s := f.stats(t); s.Store.Entries != 2 || s.Swept != 1 {
		t.Fatalf("after the second sweep: %d entries, %d swept; want 2, 1", s.Store.Entries, s.Swept)
	}
}

// TestFlushRemovesMoreThanOneBatch: Flush empties a store holding more
// entries than one Expire call removes, and counts each as a delete.
func TestFlushRemovesMoreThanOneBatch(t *testing.T) {
	const n = 2500 // more than two flush batches
	st := memstore.New(scache.Limits{MaxEntries: 10 * n, MaxBytes: 1 << 24})
	clk := &clock{now: t0}
	c := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour, Now: clk.Now}, st)
	defer c.Close()
	for i := range n {
		if err := c.Update(bg, fmt.Sprint("id-", i), []byte("session")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Flush(bg)
	if err != nil || got != n {
		t.Fatalf("Flush = %d, %v; want %d", got, err, n)
	}
	s, err := c.Stats(bg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Store.Entries != 0 {
		t.Fatalf("%d entries left after Flush, want 0", s.Store.Entries)
	}
	if s.Deletes != n {
		t.Fatalf("Deletes after flushing %d entries = %d, want %d", n, s.Deletes, n)
	}
}

// boundsSpy is a store whose SetLimits records the bounds it is given and
// (unlike the in-tree stores) trusts them.
type boundsSpy struct {
	scache.Store
	got []scache.Limits
}

func (b *boundsSpy) SetLimits(_ context.Context, lim scache.Limits) error {
	b.got = append(b.got, lim)
	return nil
}

// TestSetLimitsRejectsNonPositiveBounds: the cache refuses bounds that
// are not both positive itself, so no store is ever asked to hold zero
// entries or bytes (Store.SetLimits promises its implementations positive
// ones).
func TestSetLimitsRejectsNonPositiveBounds(t *testing.T) {
	spy := &boundsSpy{Store: memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20})}
	c := scache.New(scache.Config{Name: "smtpd", Database: "spy:", Timeout: time.Hour}, spy)
	defer c.Close()
	for _, lim := range []scache.Limits{
		{MaxEntries: 0, MaxBytes: 1 << 20},
		{MaxEntries: -1, MaxBytes: 1 << 20},
		{MaxEntries: 10, MaxBytes: 0},
		{MaxEntries: 10, MaxBytes: -1},
	} {
		if err := c.SetLimits(bg, lim); err == nil {
			t.Errorf("SetLimits(%+v) succeeded, want an error", lim)
		}
	}
	if len(spy.got) != 0 {
		t.Fatalf("store was given invalid bounds %+v", spy.got)
	}
	if err := c.SetLimits(bg, scache.Limits{MaxEntries: 1, MaxBytes: 1}); err != nil || len(spy.got) != 1 {
		t.Fatalf("SetLimits(1, 1) = %v, store given %+v; want it passed on", err, spy.got)
	}
}

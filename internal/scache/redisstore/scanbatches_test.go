package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// Dump and flush go through every SCAN batch to the end of the cursor,
// however many of its keys each batch brings (SCAN's COUNT is only a
// hint, and the other caches' keys, which share the database, are
// filtered out of each batch): thousands of entries are all listed, then
// all removed, from Redis and from the local cache, and no other cache's.
func TestDumpAndFlushEveryBatch(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}, lim: scache.Limits{MaxEntries: 10000, MaxBytes: 1 << 24}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	smtp := newMember(t, conf{addrs: []string{srv.Addr}, cache: "smtp"})
	const n = 4 * scanBatch
	now := time.Now()
	for i := range n {
		for _, m := range []*member{a, smtp} {
			if err := m.Put(ctx, fmt.Sprint("id-", i), entry(now, "s")); err != nil {
				t.Fatal(err)
			}
			// Never more than the write queue holds: none is unshared.
			if i%scanBatch == scanBatch-1 {
				settle(t, m)
			}
		}
	}
	a.wantRedisOnly(t)
	smtp.wantRedisOnly(t)
	if got := r.DBSize(ctx).Val(); got != 2*n {
		t.Fatalf("%d keys in Redis, want %d", got, 2*n)
	}
	cb := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour}, b)
	entries, total, err := cb.Dump(ctx, 10)
	if err != nil || total != n || len(entries) != 10 {
		t.Fatalf("Dump = %d entries of %d, %v; want 10 of %d", len(entries), total, err, n)
	}
	if st, _ := a.Stats(ctx); st.Entries != n {
		t.Fatalf("a's local part holds %d entries, want %d", st.Entries, n)
	}
	ca := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour}, a)
	got, err := ca.Flush(ctx)
	if err != nil || got != n {
		t.Fatalf("Flush = %d, %v; want %d", got, err, n)
	}
	if left := r.DBSize(ctx).Val(); left != n {
		t.Errorf("%d keys left in Redis after the flush, want the smtp cache's %d", left, n)
	}
	if st, _ := a.Stats(ctx); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("a's local part after the flush: %+v, want empty", st)
	}
	wantMiss(t, b, "id-0")
	wantMiss(t, a, fmt.Sprint("id-", n-1))
	wantEntry(t, smtp, "id-0", now, []byte("s"))
}

// Each stops as soon as visit says so, in the middle of a batch.
func TestEachStops(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	now := time.Now()
	for i := range 10 {
		if err := a.Put(ctx, fmt.Sprint("id-", i), entry(now, "s")); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, a)
	visits := 0
	err := a.Each(ctx, func(id string, written time.Time, size int) bool {
		visits++
		return visits < 3
	})
	if err != nil || visits != 3 {
		t.Fatalf("Each = %v after %d visits, want nil after 3 (visit said stop)", err, visits)
	}
}

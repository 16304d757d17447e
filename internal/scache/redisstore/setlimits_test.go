package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestSetLimitsWithRedisUp: a reload's smaller bound shrinks the local
// part at once (oldest first, counted) and the slots with it;
// Redis keeps every entry, so a lookup still finds an evicted one there,
// and a larger bound lets the local part grow again.
func TestSetLimitsWithRedisUp(t *testing.T) {
	srv := redistest.Single(t)
	m := newMember(t, conf{addrs: []string{srv.Addr}, prefix: "setlimits:", lim: scache.Limits{MaxEntries: 20, MaxBytes: 1 << 20}})
	defer m.Close()
	base := time.Now().Add(-time.Minute)
	for i := range 10 {
		put(t, m, fmt.Sprint("id", i), base.Add(time.Duration(i)*time.Second), []byte("s"))
	}
	// Lookups make trusted copies of what Redis returned.
	for i := range 10 {
		wantEntry(t, m, fmt.Sprint("id", i), base.Add(time.Duration(i)*time.Second), []byte("s"))
	}
	if err := m.SetLimits(ctx, scache.Limits{MaxEntries: 3, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	st, _ := m.Stats(ctx)
	if st.Entries != 3 || st.Evictions != 7 {
		t.Errorf("local part after SetLimits: %+v, want 3 entries and 7 evictions", st)
	}
	for i := range 10 {
		if has := m.localHas(fmt.Sprint("id", i)); has != (i >= 7) {
			t.Errorf("id%d kept locally: %v", i, has)
		}
	}
	m.tmu.Lock()
	slots := len(m.slots)
	m.tmu.Unlock()
	if slots > maxSlots(scache.Limits{MaxEntries: 3}) {
		t.Errorf("%d slots kept, want at most %d", slots, maxSlots(scache.Limits{MaxEntries: 3}))
	}
	// Redis still has the evicted ones.
	wantEntry(t, m, "id0", base, []byte("s"))
	if err := m.SetLimits(ctx, scache.Limits{MaxEntries: 20, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 15; i++ {
		put(t, m, fmt.Sprint("id", i), time.Now(), []byte("s"))
	}
	if st, _ := m.Stats(ctx); st.Entries < 8 {
		t.Errorf("local part did not grow again: %+v", st)
	}
	m.wantRedisOnly(t)
}

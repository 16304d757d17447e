package redisstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// Dump lists the fleet's entries (any member's) by their keyed names;
// Flush through one member removes them for all, and no other cache's.
func TestDumpAndFlushShared(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	other := newMember(t, conf{addrs: []string{srv.Addr}, cache: "smtp"})
	now := time.Now()
	for i := range 7 {
		put(t, b, fmt.Sprint("id-", i), now.Add(-time.Minute), []byte(strings.Repeat("x", 100+i)))
	}
	put(t, other, "smtp-id", now, []byte("kept"))
	ca := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour}, a)
	entries, total, err := ca.Dump(ctx, 100)
	if err != nil || total != 7 || len(entries) != 7 {
		t.Fatalf("Dump through a = %d entries of %d, %v; want b's 7", len(entries), total, err)
	}
	for _, e := range entries {
		if e.Age < time.Minute || e.Age > 2*time.Minute || e.Size < 100 || e.Size > 106 {
			t.Errorf("entry %+v", e)
		}
	}
	wantEntry(t, b, "id-3", now.Add(-time.Minute), []byte(strings.Repeat("x", 103)))
	n, err := ca.Flush(ctx)
	if err != nil || n != 7 {
		t.Fatalf("Flush = %d, %v; want 7", n, err)
	}
	wantMiss(t, b, "id-3")
	wantEntry(t, other, "smtp-id", now, []byte("kept"))
}

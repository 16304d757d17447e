package scache_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/boltstore"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
)

// Dump lists every entry by a keyed hash of its id, with its age and
// size, never the id or the session; Flush removes them all.
func TestDumpAndFlush(t *testing.T) {
	lim := scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 20}
	bolt, err := boltstore.Open(t.TempDir()+"/cache", lim, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, store := range map[string]scache.Store{"memory": memstore.New(lim), "btree": bolt} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := time.Unix(1_800_000_000, 0)
			c := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour, Now: func() time.Time { return clock }}, store)
			defer c.Close()
			for i := range 5 {
				if err := c.Update(ctx, fmt.Sprint("secret-id-", i), []byte(strings.Repeat("s", 10+i))); err != nil {
					t.Fatal(err)
				}
			}
			clock = clock.Add(90 * time.Second)
			entries, total, err := c.Dump(ctx, 3)
			if err != nil || total != 5 || len(entries) != 3 {
				t.Fatalf("Dump(3) = %d entries, total %d, %v; want 3 of 5", len(entries), total, err)
			}
			entries, _, _ = c.Dump(ctx, 10)
			sizes := map[int]bool{}
			for _, e := range entries {
				if strings.Contains(e.IDHash, "secret") || len(e.IDHash) != 16 {
					t.Errorf("id hash %q", e.IDHash)
				}
				if e.Age != 90*time.Second {
					t.Errorf("age %v, want 90s", e.Age)
				}
				sizes[e.Size] = true
			}
			if len(sizes) != 5 || !sizes[10] || !sizes[14] {
				t.Errorf("sizes %v, want 10 to 14", sizes)
			}
			if entries[0].IDHash == scache.IDHash("secret-id-x") || scache.IDHash("a") != scache.IDHash("a") {
				t.Error("IDHash is not a function of the id")
			}
			n, err := c.Flush(ctx)
			if err != nil || n != 5 {
				t.Fatalf("Flush = %d, %v; want 5", n, err)
			}
			if _, total, _ := c.Dump(ctx, 10); total != 0 {
				t.Errorf("%d entries after Flush", total)
			}
		})
	}
}

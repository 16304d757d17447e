package scache_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/boltstore"
)

// TestSweepAtStartRemovesEntriesExpiredWhileDown: a file cache reopened
// after its entries expired (the daemon was down for longer than the
// timeout) is swept as soon as the sweeper starts, not one timeout later.
func TestSweepAtStartRemovesEntriesExpiredWhileDown(t *testing.T) {
	lim := scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 20}
	path := filepath.Join(t.TempDir(), "smtpd_scache")
	clk := &clock{now: t0}
	cfg := scache.Config{Name: "smtpd", Database: "btree:" + path, Timeout: time.Hour, Now: clk.Now}

	st, err := boltstore.Open(path, lim, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := scache.New(cfg, st)
	const n = 9
	for i := range n {
		if err := c.Update(bg, fmt.Sprint("old-", i), []byte("session")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Two timeouts later, the daemon starts again.
	clk.Advance(2 * time.Hour)
	st, err = boltstore.Open(path, lim, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c = scache.New(cfg, st)
	defer c.Close()
	if s, _ := c.Stats(bg); s.Store.Entries != n || s.Swept != 0 {
		t.Fatalf("reopened cache: %d entries, %d swept; want %d, 0", s.Store.Entries, s.Swept, n)
	}

	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { c.RunSweeper(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The ticker runs on real time with a period of an hour: only the
	// sweep at start can remove them within the deadline.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := c.Stats(bg)
		if s.Swept == n && s.Store.Entries == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper started: %d swept, %d entries left; want %d swept at start, 0 left", s.Swept, s.Store.Entries, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

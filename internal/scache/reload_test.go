package scache_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// What a reload of main.cf changes in a running cache: its timeout, its
// transaction logging and its bounds, keeping the entries.

func TestSetTimeout(t *testing.T) {
	clk := &clock{now: t0}
	st := memstore.New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20})
	c := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour, Now: clk.Now}, st)
	defer c.Close()
	for i := range 3 {
		if err := c.Update(bg, fmt.Sprint("id", i), []byte("s")); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Minute)
	}
	// Written at 0, 10 and 20 minutes; now 30.
	c.SetTimeout(15 * time.Minute)
	if got := c.Timeout(); got != 15*time.Minute {
		t.Errorf("Timeout() = %v", got)
	}
	if s, _ := c.Stats(bg); s.Timeout != 15*time.Minute {
		t.Errorf("Stats().Timeout = %v", s.Timeout)
	}
	for i, live := range []bool{false, false, true} {
		_, err := c.Lookup(bg, fmt.Sprint("id", i))
		if (err == nil) != live {
			t.Errorf("id%d under the shorter timeout: %v, want live %v", i, err, live)
		}
	}
	// A longer one keeps what the shorter did not expire yet.
	c.SetTimeout(2 * time.Hour)
	clk.Advance(time.Hour)
	if _, err := c.Lookup(bg, "id2"); err != nil {
		t.Errorf("id2 under the longer timeout: %v", err)
	}
	// Nonsense is ignored.
	c.SetTimeout(0)
	c.SetTimeout(-time.Second)
	if got := c.Timeout(); got != 2*time.Hour {
		t.Errorf("Timeout() after invalid values = %v", got)
	}
}

// TestSetTimeoutWakesSweeper: the sweeper, waiting for a whole hour, runs
// at once when the timeout changes, and every new timeout from then on.
func TestSetTimeoutWakesSweeper(t *testing.T) {
	clk := &clock{now: t0}
	st := memstore.New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20})
	c := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour, Now: clk.Now}, st)
	defer c.Close()
	for i := range 5 {
		if err := c.Update(bg, fmt.Sprint("id", i), []byte("s")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	wg.Go(func() { c.RunSweeper(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitSwept := func(want uint64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			s, _ := c.Stats(bg)
			if s.Swept == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("swept %d, want %d", s.Swept, want)
			}
		}
	}
	clk.Advance(30 * time.Minute)
	c.SetTimeout(20 * time.Minute)
	waitSwept(5)
	// The new period: 200 ms, real time, between sweeps.
	for i := range 3 {
		if err := c.Update(bg, fmt.Sprint("new", i), []byte("s")); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Hour)
	c.SetTimeout(200 * time.Millisecond)
	waitSwept(8)
	if err := c.Update(bg, "later", []byte("s")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	waitSwept(9) // by the ticker at the new period
}

func TestSetLogCache(t *testing.T) {
	log := &testlog.Recorder{}
	c := scache.New(scache.Config{Name: "smtp", Database: "memory:", Timeout: time.Hour, Log: log.Logger()},
		memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}))
	defer c.Close()
	c.Lookup(bg, "quiet")
	c.SetLogCache(true)
	if !c.Logging() {
		t.Error("Logging() is false after SetLogCache(true)")
	}
	c.Lookup(bg, "loud")
	c.SetLogCache(false)
	c.Lookup(bg, "quiet again")
	got := log.String()
	if strings.Contains(got, "quiet") || !strings.Contains(got, "lookup smtp session id=loud") {
		t.Errorf("log:\n%s", got)
	}
	// Without a log it stays off.
	quiet := scache.New(scache.Config{Name: "smtp", Timeout: time.Hour}, memstore.New(scache.Limits{MaxEntries: 1, MaxBytes: 1 << 10}))
	defer quiet.Close()
	quiet.SetLogCache(true)
	if quiet.Logging() {
		t.Error("logging on without a Log")
	}
}

func TestCacheSetLimits(t *testing.T) {
	clk := &clock{now: t0}
	st := memstore.New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20})
	c := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour, Now: clk.Now}, st)
	defer c.Close()
	for i := range 10 {
		if err := c.Update(bg, fmt.Sprint("id", i), []byte("s")); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if err := c.SetLimits(bg, scache.Limits{MaxEntries: 4, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	s, _ := c.Stats(bg)
	if s.Store.Entries != 4 || s.Store.Evictions != 6 {
		t.Errorf("after SetLimits: %+v", s.Store)
	}
	for i := range 10 {
		_, err := c.Lookup(bg, fmt.Sprint("id", i))
		if (err == nil) != (i >= 6) {
			t.Errorf("id%d: %v", i, err)
		}
	}
	if err := c.SetLimits(bg, scache.Limits{MaxEntries: 0, MaxBytes: 1}); err == nil {
		t.Error("SetLimits with no room succeeded")
	}
}

// TestReloadWhileServing changes timeout, logging and bounds while
// lookups and updates run (for the race detector).
func TestReloadWhileServing(t *testing.T) {
	c := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour, Log: (&testlog.Recorder{}).Logger()},
		memstore.New(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 20}))
	defer c.Close()
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	wg.Go(func() { c.RunSweeper(ctx) })
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i%50)
				c.Update(ctx, id, []byte("s"))
				c.Lookup(ctx, id)
			}
		})
	}
	for i := range 50 {
		c.SetTimeout(time.Duration(120+i) * time.Second)
		c.SetLogCache(i%2 == 0)
		if err := c.SetLimits(bg, scache.Limits{MaxEntries: 10 + i, MaxBytes: 1 << 20}); err != nil {
			t.Error(err)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
}

package scache_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// watchSpy is a watchdog stand-in: what is running now, and what ran.
type watchSpy struct {
	mu      sync.Mutex
	running []string
	started []string
}

func (w *watchSpy) Start(what string) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running = append(w.running, what)
	w.started = append(w.started, what)
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.running = slices.DeleteFunc(w.running, func(s string) bool { return s == what })
	}
}

func (w *watchSpy) now() (running, started []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.running), slices.Clone(w.started)
}

// Every sweep batch runs under the watchdog (Config.Watch): a store that
// wedges in the background is noticed even though no request waits on it.
func TestSweepBatchesAreWatched(t *testing.T) {
	w := &watchSpy{}
	f := newCache(t, func(c *scache.Config) { c.Watch = w.Start; c.SweepBatch = 2 })
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		f.update(t, id, "x")
	}
	const what = "sweep of the smtpd TLS cache btree:/tmp/smtpd_scache"
	var during [][]string
	f.store.onExpire = func(int) {
		running, _ := w.now()
		during = append(during, running)
	}
	f.clk.Advance(2 * time.Hour)
	if n, err := f.c.Sweep(bg); err != nil || n != 5 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if len(during) != 3 {
		t.Fatalf("%d batches, want 3", len(during))
	}
	for i, r := range during {
		if !slices.Equal(r, []string{what}) {
			t.Errorf("batch %d ran while the watchdog saw %q", i, r)
		}
	}
	if running, started := w.now(); len(running) != 0 || len(started) != 3 {
		t.Errorf("after the sweep: running %q, started %q", running, started)
	}
}

// WithClient names the client on every transaction log line.
func TestTransactionLogNamesClient(t *testing.T) {
	f := newCache(t, func(c *scache.Config) { c.LogCache = true })
	if !f.c.Logging() {
		t.Fatal("Logging() is false with LogCache")
	}
	ctx := scache.WithClient(bg, "conn 7 (pid 42, uid 107) on private/tlsmgr")
	if err := f.c.Update(ctx, "id1", []byte("session")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Lookup(ctx, "id1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Delete(ctx, "id1"); err != nil {
		t.Fatal(err)
	}
	const from = " from conn 7 (pid 42, uid 107) on private/tlsmgr"
	want := []string{
		"open smtpd TLS cache btree:/tmp/smtpd_scache",
		"put smtpd session id=id1 [data 7 bytes]" + from,
		"write smtpd TLS cache entry id1: time=1700000000 [data 7 bytes]" + from,
		"lookup smtpd session id=id1" + from,
		"read smtpd TLS cache entry id1: time=1700000000 [data 7 bytes]" + from,
		"delete smtpd session id=id1" + from,
	}
	if got := f.log.Lines(); !slices.Equal(got, infos(want)) {
		t.Errorf("log:\n%q\nwant:\n%q", got, want)
	}
	if newCache(t, nil).c.Logging() {
		t.Error("Logging() is true without LogCache")
	}
}

package prng

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// Run's reseeds and exchange-file updates run under the watchdog
// (Options.Watch), each from its start to its end: an exchange file on a
// dead disk wedges Run, and no request would notice.
func TestRunEventsAreWatched(t *testing.T) {
	var mu sync.Mutex
	var events []string
	watch := func(what string) func() {
		mu.Lock()
		events = append(events, "start "+what)
		mu.Unlock()
		return func() {
			mu.Lock()
			events = append(events, "done "+what)
			mu.Unlock()
		}
	}
	path := filepath.Join(t.TempDir(), "prng_exch")
	clock := newFakeClock()
	m, err := testOpen(Options{ExchangeFile: path, Clock: clock, Watch: watch})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	reseed, exchange := clock.next(t), clock.next(t)
	clock.fire(reseed)
	clock.next(t) // the event is over once the next timer is asked for
	clock.fire(exchange)
	clock.next(t)
	cancel()
	<-done
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"start PRNG reseed", "done PRNG reseed",
		"start PRNG exchange file update of " + path, "done PRNG exchange file update of " + path,
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Errorf("watched %q\nwant    %q", events, want)
	}
}

package prng

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// TestTimers drives Run with a fake clock: the first two timer requests
// are the reseed and exchange timers, and each firing is followed by a
// request for that timer's next interval.
func TestTimers(t *testing.T) {
	s := startEGD(t, egdNormal)
	path := filepath.Join(t.TempDir(), "prng_exch")
	clock := newFakeClock()
	const reseedPeriod, updatePeriod = 1000 * time.Second, 50 * time.Second
	m, err := testOpen(Options{
		Source: "egd:" + s.path, ExchangeFile: path, Clock: clock,
		ReseedPeriod: reseedPeriod, UpdatePeriod: updatePeriod,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()

	reseed := clock.next(t)
	exchange := clock.next(t)
	for range 5 {
		if !isScaledInterval(reseed.d, reseedPeriod) {
			t.Fatalf("reseed interval %v is not period*b/255 for a byte b, period %v", reseed.d, reseedPeriod)
		}
		requests := s.requests.Load()
		clock.fire(reseed)
		reseed = clock.next(t)
		if s.requests.Load() != requests+1 {
			t.Fatal("the reseed timer did not read the source")
		}
		if got := m.Stats().LastReseed; !got.Equal(clock.Now()) {
			t.Fatalf("LastReseed %v, want %v", got, clock.Now())
		}

		if !isScaledInterval(exchange.d, updatePeriod) {
			t.Fatalf("exchange interval %v is not period*b/255 for a byte b, period %v", exchange.d, updatePeriod)
		}
		before := readFile(t, path)
		clock.fire(exchange)
		exchange = clock.next(t)
		if bytes.Equal(before, readFile(t, path)) {
			t.Fatal("the exchange timer did not update the file")
		}
		if got := m.Stats().LastExchangeUpdate; !got.Equal(clock.Now()) {
			t.Fatalf("LastExchangeUpdate %v, want %v", got, clock.Now())
		}
	}
	cancel()
	<-done
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func isScaledInterval(d, period time.Duration) bool {
	for b := range 256 {
		if scaledInterval(period, byte(b)) == d {
			return true
		}
	}
	return false
}

func TestScaledInterval(t *testing.T) {
	for _, period := range []time.Duration{time.Second, 3600 * time.Second, config.MaxRandomPeriod} {
		if got := scaledInterval(period, 0); got != 0 {
			t.Errorf("b=0: %v", got)
		}
		if got := scaledInterval(period, 255); got != period {
			t.Errorf("b=255: %v, want %v", got, period)
		}
		for b := 1; b < 256; b++ {
			if scaledInterval(period, byte(b)) <= scaledInterval(period, byte(b-1)) {
				t.Fatalf("period %v: not increasing at %d", period, b)
			}
		}
	}
	if got := scaledInterval(3600*time.Second, 51); got != 720*time.Second {
		t.Errorf("3600s*51/255 = %v, want 12m", got)
	}
}

func TestRandomIntervals(t *testing.T) {
	m, err := testOpen(Options{Source: "dev:/dev/urandom"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, period := range []time.Duration{time.Second, 3600 * time.Second, config.MaxRandomPeriod} {
		var lowest, highest time.Duration = period, 0
		for range 5000 {
			d := m.randomInterval(period)
			if d < 0 || d > period {
				t.Fatalf("interval %v outside [0, %v]", d, period)
			}
			lowest, highest = min(lowest, d), max(highest, d)
		}
		if lowest > period/20 || highest < period-period/20 {
			t.Errorf("period %v: intervals only in [%v, %v]", period, lowest, highest)
		}
	}
}

func TestBackoff(t *testing.T) {
	m, err := testOpen(Options{Source: "dev:/dev/urandom", RetryMin: time.Second, RetryMax: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := m.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := m.backoff(1000); got != 10*time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}

// TestSourceFailureAtRunTime: the device works, then fails; the manager
// warns, keeps serving, retries with back-off, and says when it is back.
func TestSourceFailureAtRunTime(t *testing.T) {
	s := startEGD(t, egdNormal)
	clock := newFakeClock()
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "egd:" + s.path, Clock: clock, Logger: log.Logger(), RetryMin: time.Second, RetryMax: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
		m.Close()
	}()
	s.mode.Store(egdZero)
	w := clock.next(t)
	for _, wantDelay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		clock.fire(w)
		w = clock.next(t)
		if w.d != wantDelay {
			t.Fatalf("retry after %v, want %v", w.d, wantDelay)
		}
		poolBytes(t, m.Pool(), 32)
	}
	if n := log.Count("warn", "cannot read from EGD server "+s.path+": server reports zero bytes available"); n != 4 {
		t.Fatalf("%d warnings; log %q", n, log.Lines())
	}
	if st := m.Stats(); st.SourceOK || st.ReseedFailures != 4 {
		t.Fatalf("stats: %+v", st)
	}
	s.mode.Store(egdNormal)
	clock.fire(w)
	w = clock.next(t)
	if log.Count("info", "entropy source egd:"+s.path+" is working again") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	if st := m.Stats(); !st.SourceOK || !st.LastReseed.Equal(clock.Now()) {
		t.Fatalf("stats: %+v", st)
	}
	if w.d > testPeriod {
		t.Fatalf("after recovery the next reseed is in %v", w.d)
	}
}

func TestRunStopsOnClose(t *testing.T) {
	m, err := testOpen(Options{Source: "dev:/dev/urandom"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		m.Run(context.Background())
		close(done)
	}()
	m.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// TestOptionsRequired: the main.cf values have no defaults here (config
// has them): Open refuses a zero or negative count or period, and takes a
// period as long as main.cf allows as it is.
func TestOptionsRequired(t *testing.T) {
	for _, o := range []Options{
		{Bytes: 0, ReseedPeriod: time.Hour, UpdatePeriod: time.Hour},
		{Bytes: -1, ReseedPeriod: time.Hour, UpdatePeriod: time.Hour},
		{Bytes: 32, ReseedPeriod: 0, UpdatePeriod: time.Hour},
		{Bytes: 32, ReseedPeriod: -time.Second, UpdatePeriod: time.Hour},
		{Bytes: 32, ReseedPeriod: time.Hour, UpdatePeriod: 0},
	} {
		if m, err := Open(o); err == nil {
			m.Close()
			t.Errorf("Open(Bytes %d, ReseedPeriod %v, UpdatePeriod %v) accepted", o.Bytes, o.ReseedPeriod, o.UpdatePeriod)
		}
	}
	m, err := Open(Options{Source: "dev:/dev/urandom", Bytes: 7, ReseedPeriod: time.Second, UpdatePeriod: config.MaxRandomPeriod})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.opts.Bytes != 7 || m.opts.ReseedPeriod != time.Second || m.opts.UpdatePeriod != config.MaxRandomPeriod {
		t.Fatalf("options changed: %+v", m.opts)
	}
}

func TestStatsCountServedBytes(t *testing.T) {
	m, err := testOpen(Options{Source: "dev:/dev/urandom", ExchangeFile: filepath.Join(t.TempDir(), "prng_exch")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Pool().Read(make([]byte, 32))
	m.Pool().Read(make([]byte, 255))
	m.updateExchange()
	st := m.Stats()
	if st.Reads != 2 || st.BytesServed != 287 {
		t.Fatalf("stats: %+v", st)
	}
}

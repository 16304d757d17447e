package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// fakeBreaker is a breaker on a hand-driven clock with no jitter
// (rand = 0.5 makes the factor exactly 1), counting its transitions.
type fakeBreaker struct {
	*breaker
	clock     time.Duration
	downs     []error
	ups       []time.Duration
	randValue float64
}

func newFake() *fakeBreaker {
	f := &fakeBreaker{randValue: 0.5}
	f.breaker = newBreaker(defaultBreaker(10*time.Millisecond, 100*time.Millisecond),
		func(err error) { f.downs = append(f.downs, err) },
		func(d time.Duration) { f.ups = append(f.ups, d) })
	f.now = func() time.Duration { return f.clock }
	f.rand = func() float64 { return f.randValue }
	return f
}

var errTimeout = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

func (f *fakeBreaker) call(t *testing.T, result error) {
	t.Helper()
	if err := f.Allow(); err != nil {
		t.Fatalf("at %v: Allow = %v, want nil", f.clock, err)
	}
	f.ReportResult(result)
}

func (f *fakeBreaker) wantRefused(t *testing.T) {
	t.Helper()
	if err := f.Allow(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("at %v: Allow = %v, want ErrUnavailable", f.clock, err)
	}
}

func (f *fakeBreaker) wantState(t *testing.T, want string) {
	t.Helper()
	if got := f.stateName(); got != want {
		t.Fatalf("at %v: state %s, want %s", f.clock, got, want)
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	f := newFake()
	// Two failures, then an answer: the streak is broken.
	f.call(t, errTimeout)
	f.call(t, errTimeout)
	f.call(t, nil)
	f.call(t, errTimeout)
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	// Misses and command errors are answers, and break the streak too.
	f.call(t, redis.Nil)
	f.call(t, errTimeout)
	f.call(t, errTimeout)
	f.call(t, redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"))
	f.call(t, errTimeout)
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	if len(f.downs) != 0 {
		t.Fatalf("down reported without 3 consecutive failures: %v", f.downs)
	}
	f.call(t, io.EOF)
	f.wantState(t, StateDown)
	if len(f.downs) != 1 || f.downs[0] != io.EOF || f.opens.Load() != 1 {
		t.Fatalf("downs %v, opens %d; want one, caused by EOF", f.downs, f.opens.Load())
	}
	f.wantRefused(t)
}

func TestBreakerWindow(t *testing.T) {
	f := newFake()
	f.call(t, errTimeout)
	f.clock += 3 * time.Second
	f.call(t, errTimeout)
	f.clock += 3 * time.Second // 6 s after the first: the streak starts again
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	f.clock += time.Second
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	f.call(t, errTimeout)
	f.wantState(t, StateDown)
}

func trip(t *testing.T, f *fakeBreaker) {
	t.Helper()
	for range 3 {
		f.call(t, errTimeout)
	}
	f.wantState(t, StateDown)
}

func TestBreakerProbeAndBackoff(t *testing.T) {
	f := newFake()
	trip(t, f)
	start := f.clock
	// Late results of calls let through before it opened change nothing.
	f.ReportResult(nil)
	f.ReportResult(errTimeout)
	f.wantState(t, StateDown)

	wantBackoff := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, ms := range wantBackoff {
		d := ms * time.Millisecond
		f.clock += d - time.Nanosecond
		f.wantRefused(t)
		f.clock += time.Nanosecond
		if err := f.Allow(); err != nil {
			t.Fatalf("probe %d after %v refused: %v", i, d, err)
		}
		f.wantState(t, StateProbing)
		// One probe at a time.
		f.wantRefused(t)
		f.wantRefused(t)
		if i == len(wantBackoff)-1 {
			break
		}
		f.ReportResult(errTimeout)
		f.wantState(t, StateDown)
	}
	f.ReportResult(redis.Nil)
	f.wantState(t, StateUp)
	if len(f.downs) != 1 || len(f.ups) != 1 {
		t.Fatalf("%d down and %d up transitions reported, want 1 and 1", len(f.downs), len(f.ups))
	}
	if f.ups[0] != f.clock-start {
		t.Fatalf("outage reported as %v, want %v", f.ups[0], f.clock-start)
	}
	// Closed again with the back-off reset.
	f.call(t, nil)
	trip(t, f)
	f.clock += 100 * time.Millisecond
	f.call(t, nil)
	f.wantState(t, StateUp)
	if len(f.downs) != 2 || len(f.ups) != 2 || f.opens.Load() != 2 {
		t.Fatalf("second outage: %d downs, %d ups, %d opens", len(f.downs), len(f.ups), f.opens.Load())
	}
}

func TestBreakerJitter(t *testing.T) {
	for _, r := range []float64{0, 0.999} {
		f := newFake()
		f.randValue = r
		trip(t, f)
		// 100 ms ± 20%.
		lo, hi := 80*time.Millisecond, 120*time.Millisecond
		got := time.Duration(f.until.Load()) - f.clock
		if got < lo || got > hi {
			t.Errorf("rand %v: back-off %v, want within [%v, %v]", r, got, lo, hi)
		}
	}
}

func TestBreakerLostProbe(t *testing.T) {
	f := newFake()
	trip(t, f)
	f.clock += 100 * time.Millisecond
	if err := f.Allow(); err != nil {
		t.Fatal(err)
	}
	// Its result never comes: after the lease another probe may go.
	f.clock += f.cfg.probeLease - time.Nanosecond
	f.wantRefused(t)
	f.clock += time.Nanosecond
	f.call(t, nil)
	f.wantState(t, StateUp)
}

func TestBreakerCancelledProbe(t *testing.T) {
	f := newFake()
	trip(t, f)
	f.clock += 100 * time.Millisecond
	if err := f.Allow(); err != nil {
		t.Fatal(err)
	}
	f.ReportResult(fmt.Errorf("shutting down: %w", context.Canceled))
	f.wantState(t, StateDown)
	// It told nothing: the next call probes at once, with no longer wait.
	f.call(t, nil)
	f.wantState(t, StateUp)
}

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want outcome
	}{
		{nil, success},
		{redis.Nil, success},
		{redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), success},
		{redisErr("ERR syntax error"), success},
		{redisErr("OOM command not allowed when used memory > 'maxmemory'."), success},
		{redisErr("MOVED 3999 127.0.0.1:6381"), success},
		{redisErr("LOADING Redis is loading the dataset in memory"), failure},
		{redisErr("READONLY You can't write against a read only replica."), failure},
		{redisErr("WRONGPASS invalid username-password pair or user is disabled."), failure},
		{redisErr("NOAUTH Authentication required."), failure},
		{redisErr("CLUSTERDOWN The cluster is down"), failure},
		{redisErr("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), failure},
		{redisErr("BUSY Redis is busy running a script."), failure},
		{redisErr("ERR max number of clients reached"), failure},
		{errTimeout, failure},
		{context.DeadlineExceeded, failure},
		{redis.ErrPoolTimeout, failure},
		{io.EOF, failure},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, failure},
		{context.Canceled, neutral},
		{redis.ErrClosed, neutral},
		{ErrUnavailable, neutral},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

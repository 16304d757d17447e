package redisconn

import (
	"testing"
	"time"
)

// Failures count towards opening the breaker for 5 s from the first of a
// streak: three within 5 s open it, however they are spread.
func TestBreakerStreakWindow(t *testing.T) {
	f := newFake()
	f.call(t, errTimeout)
	f.clock += 4900 * time.Millisecond
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	f.clock += 100 * time.Millisecond // 5 s after the first: still in the window
	f.call(t, errTimeout)
	f.wantState(t, StateDown)
	if len(f.downs) != 1 {
		t.Fatalf("%d down transitions reported, want 1", len(f.downs))
	}
}

// An outage's failures are forgotten once a probe succeeds: after a short
// outage, within the 5 s window of its streak, one more failure does not
// open the breaker again; a new streak of three does.
func TestBreakerStreakStartsAfterRecovery(t *testing.T) {
	f := newFake()
	trip(t, f)
	f.clock += 100 * time.Millisecond
	f.call(t, nil) // the probe: up again
	f.wantState(t, StateUp)
	f.clock += 10 * time.Millisecond
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	f.call(t, errTimeout)
	f.wantState(t, StateUp)
	f.call(t, errTimeout)
	f.wantState(t, StateDown)
	if len(f.downs) != 2 || len(f.ups) != 1 || f.opens.Load() != 2 {
		t.Fatalf("%d downs, %d ups, %d opens; want 2, 1, 2", len(f.downs), len(f.ups), f.opens.Load())
	}
}

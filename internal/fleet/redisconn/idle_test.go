package redisconn

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// waitState polls c's state, asking Redis nothing itself, until it is
// want or limit passes; it returns how long that took.
func waitState(t *testing.T, c *Client, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for c.Stats().State != want {
		if time.Since(start) > limit {
			t.Fatalf("state %q after %v with no traffic; want %q", c.Stats().State, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// A member that no request reaches still reports an outage, and its end:
// with tracking running and not one call made, the state goes down while
// the server is paused and up again once it continues, each logged once.
// Before the tracker asked through the request path, such a member said
// "up" for the whole outage (TestFleetRedisOutage, on a fast run), and
// "down" after it until the next request.
func TestIdleClientFollowsOutage(t *testing.T) {
	srv := redistest.Single(t)
	c, log := dial(t, single(srv.Addr), nil)
	tr := c.Track("idle:", func([]string) {})
	t.Cleanup(func() { tr.Close() })
	within := func(what string, limit time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	within("tracking on", 10*time.Second, func() bool { _, on := tr.State(); return on })
	base := c.Stats()
	if base.State != StateUp {
		t.Fatalf("state %q before the outage", base.State)
	}

	paused(t, srv)
	// The tracker's round fails after a second; each failed session and
	// set-up has the request path ask once: three within the breaker's
	// window open it.
	d := waitState(t, c, StateDown, 15*time.Second)
	t.Logf("down %v after the pause", d)
	// The breaker opens, then its warning is written.
	within("'unavailable' logged", time.Second, func() bool { return log.Count("warn", "unavailable") >= 1 })
	if n := log.Count("warn", "unavailable"); n != 1 {
		t.Errorf("%d 'unavailable' warnings; want 1:\n%s", n, log)
	}
	st := statsSince(c.Stats(), base)
	if st.BreakerOpens != 1 || st.Timeouts < 3 {
		t.Errorf("during the outage: %+v; want one opening after three timeouts or more", st)
	}

	srv.Resume()
	d = waitState(t, c, StateUp, 20*time.Second)
	t.Logf("up %v after the resumption", d)
	within("'available again' logged", time.Second, func() bool { return log.Count("info", "available again") == 1 })
	// Checks go one at a time and only while the breaker allows a call:
	// a handful over the outage, not one per heartbeat.
	if st := statsSince(c.Stats(), base); st.Ops > 40 || st.Refused != 0 {
		t.Errorf("the checks made %d calls (%d refused) over the outage", st.Ops, st.Refused)
	}
}

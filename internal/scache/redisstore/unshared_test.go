package redisstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// pauseWrites holds Redis's write commands (reads go on) for d, or until
// unpause or the test's end; it skips the test on a server without
// CLIENT PAUSE ... WRITE (before Redis 6.2).
func pauseWrites(t *testing.T, r *redis.Client, d time.Duration) (unpause func()) {
	t.Helper()
	if err := r.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "WRITE").Err(); err != nil {
		if strings.Contains(err.Error(), "Unknown subcommand") {
			t.Skipf("the server cannot pause writes alone: %v", err)
		}
		t.Fatal(err)
	}
	unpause = func() { r.Do(ctx, "CLIENT", "UNPAUSE") }
	t.Cleanup(unpause)
	return unpause
}

// breakerOpen drives lookups through m, whose Redis is gone, until its
// breaker is open.
func breakerOpen(t *testing.T, m *member) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); m.FleetStats().Backend.State != redisconn.StateDown; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the breaker still closed after 10 s of failures: %+v", m.FleetStats())
		}
		m.Get(ctx, "probe")
	}
}

// forgetReports makes m's next unshared change the first of a period:
// the rate limits are the log's.
func (m *member) forgetReports() {
	m.log.Reset()
}

// An update or delete the breaker keeps from Redis is logged with its
// cause, as one the writer could not share is: the breaker's own line
// says Redis is down, not that the fleet misses a change.
func TestUnsharedWhileBreakerOpenLogged(t *testing.T) {
	m := newMember(t, conf{addrs: []string{deadServer(t)}, timeout: timeout})
	const cause = "not shared with the fleet (Redis unavailable, the circuit breaker is open)"
	for _, c := range []struct {
		what string
		do   func(i int)
	}{
		{"an update", func(i int) { m.Put(ctx, fmt.Sprint("u", i), entry(time.Now(), "s")) }},
		{"a delete", func(i int) { m.Delete(ctx, fmt.Sprint("u", i)) }},
	} {
		// The breaker probes now and then: a change made while it lets
		// a probe through goes to the writer instead. Retried.
		for i := 0; ; i++ {
			breakerOpen(t, m)
			settle(t, m)
			m.forgetReports()
			m.log.Reset()
			c.do(i)
			if m.log.Has(c.what + " " + cause) {
				break
			}
			if i == 20 {
				t.Fatalf("%s made while the breaker is open never logged as unshared: %q", c.what, m.log.Lines())
			}
		}
	}
	if st := m.FleetStats(); st.UpdatesUnshared == 0 || st.DeletesUnshared == 0 {
		t.Errorf("stats %+v: want unshared updates and deletes counted", st)
	}
}

// The report that ends a quiet period counts the unshared changes it
// kept quiet about.
func TestUnsharedReportCountsTheOthers(t *testing.T) {
	m := newMember(t, conf{addrs: []string{deadServer(t)}, timeout: timeout})
	m.forgetReports()
	m.log.Reset()
	m.Put(ctx, "first", entry(time.Now(), "s"))
	settle(t, m)
	if n := m.log.Count("warn", "not shared with the fleet"); n != 1 {
		t.Fatalf("the first unshared update logged %d times: %q", n, m.log.Lines())
	}
	const quiet = 5
	for i := range quiet {
		m.Put(ctx, fmt.Sprint("quiet-", i), entry(time.Now(), "s"))
	}
	settle(t, m)
	if n := m.log.Count("warn", "not shared with the fleet"); n != 1 {
		t.Fatalf("unshared updates within the period logged: %q", m.log.Lines())
	}
	// The period is over.
	m.log.Elapse(unsharedLogEvery + time.Second)
	m.Delete(ctx, "first")
	settle(t, m)
	want := fmt.Sprintf("; %d more not shared since the last report", quiet)
	lines := m.log.Lines()
	if len(lines) != 2 || !strings.Contains(lines[1].Text, "a delete not shared with the fleet") || !strings.HasSuffix(lines[1].Text, want) {
		t.Fatalf("log %q; want a second line for the delete ending %q", lines, want)
	}
}

// A delete that Redis does not answer in time (a write pause: the
// breaker stays closed) is counted and logged as one the fleet did not
// get, and the delete is still done locally.
func TestTimedOutDeleteCounted(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 50 * time.Millisecond})
	waitTracking(t, a)
	putShared(t, a, "id", time.Now(), []byte("s"))
	base := a.FleetStats()
	a.forgetReports()
	a.log.Reset()
	pauseWrites(t, r, 20*time.Second)
	if _, err := a.Delete(ctx, "id"); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	st := a.FleetStats()
	if st.DeletesUnshared-base.DeletesUnshared != 1 || st.UpdatesUnshared != base.UpdatesUnshared {
		t.Errorf("stats %+v, before %+v: want one unshared delete", st, base)
	}
	if n := a.log.Count("warn", "a delete not shared with the fleet ("); n != 1 {
		t.Errorf("the unshared delete logged %d times: %q", n, a.log.Lines())
	}
	if a.localHas("id") {
		t.Error("the delete left the local copy")
	}
}

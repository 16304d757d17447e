package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/redis/go-redis/v9"
)

// lookup returns the session m answers for id, "" for a miss.
func lookup(m *member, id string) string {
	e, err := m.Get(ctx, id)
	if err != nil {
		return ""
	}
	return string(e.Session)
}

// readTrusted reads id through m until m keeps a trusted copy of want (a
// loaded machine may make a read miss its deadline or race the tracker).
func readTrusted(t *testing.T, m *member, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(t, m)
		got := lookup(m, id)
		m.tmu.Lock()
		sl := m.slots[m.writeKey(id)]
		ok := got == want && sl != nil && sl.trusted && sl.clean
		m.tmu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get(%q) = %q, want a trusted copy of %q", id, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxiedPair returns member a, which reaches Redis through a proxy the
// test can cut, and member b, connected directly, both tracking; a's
// calls have 100ms, so that a loaded machine does not open its breaker
// before the test cuts it off.
func proxiedPair(t *testing.T) (*redistest.Proxy, *member, *member) {
	t.Helper()
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}, timeout: 100 * time.Millisecond})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	return px, a, b
}

// readFrom has b write each id ("ID v1") and a read it into a trusted copy.
func readFrom(t *testing.T, a, b *member, now time.Time, ids ...string) {
	t.Helper()
	for _, id := range ids {
		put(t, b, id, now, []byte(id+" v1"))
		readTrusted(t, a, id, id+" v1")
	}
}

// A member whose link to Redis is black-holed serves its local copies,
// but never one whose key another member deleted or replaced while this
// one was connected and saw it: not while tracking still looks alive, not
// in the fallback once the breaker opens, not after tracking is lost.
// Before, it served the deleted and the replaced sessions for as long as
// the outage lasted.
func TestOutageNeverServesWhatTheFleetChanged(t *testing.T) {
	px, a, b := proxiedPair(t)
	now := time.Now()

	// Copies a read from Redis, and a's own writes.
	readFrom(t, a, b, now, "kept", "deleted", "replaced")
	for _, id := range []string{"own-kept", "own-deleted", "own-replaced"} {
		putShared(t, a, id, now, []byte(id+" v1"))
	}
	// The fleet changes some of them; a sees it.
	for _, id := range []string{"deleted", "own-deleted"} {
		if ok, err := b.Delete(ctx, id); !ok || err != nil {
			t.Fatalf("b.Delete(%s) = %v, %v", id, ok, err)
		}
	}
	for _, id := range []string{"replaced", "own-replaced"} {
		put(t, b, id, now.Add(time.Second), []byte(id+" v2"))
	}
	settle(t, b)
	settle(t, a)

	px.BlackHole()
	t.Cleanup(px.Restore)
	want := map[string]string{
		"kept": "kept v1", "own-kept": "own-kept v1",
		"deleted": "", "own-deleted": "",
		// a never read v2: a miss is all it can answer.
		"replaced": "", "own-replaced": "",
	}
	start := time.Now()
	lookups, served := 0, map[string]int{}
	var st FleetStats
	// Through every phase: tracking still on, its proof going stale, the
	// breaker opening, tracking lost.
	for st = a.FleetStats(); time.Since(start) < 2*time.Second || st.Tracking == "on" || st.Backend.State == redisconn.StateUp; st = a.FleetStats() {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("a still has tracking %s, Redis %s, 15 s into the black hole", st.Tracking, st.Backend.State)
		}
		for id, w := range want {
			got := lookup(a, id)
			lookups++
			if got != w {
				t.Fatalf("%v into the black hole, Get(%s) = %q, want %q; stats %+v", time.Since(start).Round(time.Millisecond), id, got, w, st)
			}
			if got != "" {
				served[id]++
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d lookups in %v of black hole, copies served %v; stats %+v", lookups, time.Since(start).Round(time.Millisecond), served, st)
	if st.FallbackHits == 0 {
		t.Errorf("no lookup was answered by the fallback: %+v", st)
	}

	px.Restore()
	untilUp(t, a, 15*time.Second)
	waitTracking(t, a)
	wantMiss(t, a, "deleted")
	wantEntry(t, a, "replaced", now.Add(time.Second), []byte("replaced v2"))
	wantEntry(t, a, "own-replaced", now.Add(time.Second), []byte("own-replaced v2"))
	wantEntry(t, a, "own-kept", now, []byte("own-kept v1"))
}

// Changes made while a member's tracking was off, Redis reachable, go
// unreported: once tracking is back, its copies are proved against Redis
// again, so a later outage serves those Redis still held and never one
// deleted or replaced in the gap.
func TestOutageAfterTrackingGap(t *testing.T) {
	px, a, b := proxiedPair(t)
	now := time.Now()
	readFrom(t, a, b, now, "kept", "deleted", "replaced")
	for _, id := range []string{"own-kept", "own-deleted"} {
		putShared(t, a, id, now, []byte(id+" v1"))
	}

	// a's subscriber stops answering: a's tracking goes, its other
	// connections work.
	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	waitSessionEnded(t, a)
	gap := a.tracker.Epoch()
	for _, id := range []string{"deleted", "own-deleted"} {
		if ok, err := b.Delete(ctx, id); !ok || err != nil {
			t.Fatalf("b.Delete(%s) = %v, %v", id, ok, err)
		}
	}
	put(t, b, "replaced", now.Add(time.Second), []byte("replaced v2"))
	px.Restore()
	// The new session, and the copies proved in it.
	waitProvedAfter(t, a, "kept", gap)

	px.BlackHole()
	start := time.Now()
	for st := a.FleetStats(); time.Since(start) < 2*time.Second || st.Backend.State == redisconn.StateUp; st = a.FleetStats() {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("a still has Redis %s 15 s into the black hole", st.Backend.State)
		}
		for id, w := range map[string]string{"kept": "kept v1", "own-kept": "own-kept v1", "deleted": "", "own-deleted": "", "replaced": ""} {
			if got := lookup(a, id); got != w {
				t.Fatalf("%v into the black hole, Get(%s) = %q, want %q", time.Since(start).Round(time.Millisecond), id, got, w)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.FleetStats(); st.FallbackHits == 0 {
		t.Errorf("no lookup was answered by the fallback: %+v", st)
	}
}

// A burst of updates is shared first and proved after: the writer skips
// proving what it sent while more writes wait, and revalidate proves them
// later, so an outage then serves every one of them (their own
// invalidations arrived meanwhile).
func TestBurstProvedLater(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}, timeout: 100 * time.Millisecond})
	waitTracking(t, a)
	now := time.Now()
	const n = 300
	for i := range n {
		if err := a.Put(ctx, fmt.Sprint("burst-", i), entry(now, fmt.Sprint("s", i))); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, a)
	unproved := 0
	for i := range n {
		if !a.verified(fmt.Sprint("burst-", i)) {
			unproved++
		}
	}
	t.Logf("%d of %d updates of the burst not proved by the writer", unproved, n)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left := 0
		for i := range n {
			if !a.verified(fmt.Sprint("burst-", i)) {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d updates of the burst still not proved after 10 s", left)
		}
	}
	px.BlackHole()
	t.Cleanup(px.Restore)
	// Once the copies are no longer trusted (the tracker's proof is
	// stale), the fallback answers.
	for deadline := time.Now().Add(5 * time.Second); a.FleetStats().Tracking == "on"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("tracking still on 5 s into the black hole")
		}
	}
	for i := range n {
		if got, want := lookup(a, fmt.Sprint("burst-", i)), fmt.Sprint("s", i); got != want {
			t.Fatalf("black-holed, Get(burst-%d) = %q, want %q; stats %+v", i, got, want, a.FleetStats())
		}
	}
	if st := a.FleetStats(); st.FallbackHits < n-3 {
		t.Errorf("the fallback answered %d lookups, want all but the 3 that opened the breaker: %+v", st.FallbackHits, st)
	}
}

// fault makes Redis fail a member's writes for a while: refused (OOM),
// held until they time out (CLIENT PAUSE), or not even read (DEBUG
// SLEEP, after which the writes sent before the member gave up run, in
// whatever order their connections are read).
type fault struct {
	name  string
	start func(t *testing.T, r *redis.Client) (end func())
}

var writeFaults = []fault{
	{"client-pause-write", func(t *testing.T, r *redis.Client) func() { return pause(t, r, "WRITE") }},
	// A paused server answers nothing, CLIENT UNPAUSE included: the
	// pause ends by itself.
	{"client-pause-all", func(t *testing.T, r *redis.Client) func() { return pause(t, r, "ALL") }},
	{"oom", func(t *testing.T, r *redis.Client) func() {
		if err := r.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
			t.Fatal(err)
		}
		return func() { r.ConfigSet(ctx, "maxmemory", "0") }
	}},
	{"debug-sleep", func(t *testing.T, r *redis.Client) func() {
		// The admin connection sleeps with the server; its own client,
		// so that the test's goes on.
		sleeper := redis.NewClient(&redis.Options{Addr: r.Options().Addr, ReadTimeout: time.Minute, MaxRetries: -1})
		done := make(chan struct{})
		go func() {
			defer close(done)
			sleeper.Do(context.Background(), "DEBUG", "SLEEP", "1.5")
		}()
		time.Sleep(50 * time.Millisecond) // it is asleep
		return func() {
			<-done
			sleeper.Close()
		}
	}},
}

// pause pauses Redis's clients for long enough for the writes of five
// updates to run into their deadline, under a loaded machine too; end
// waits until the pause is over.
func pause(t *testing.T, r *redis.Client, what string) (end func()) {
	const d = 2 * time.Second
	over := time.Now().Add(d)
	if err := r.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), what).Err(); err != nil {
		t.Fatal(err)
	}
	return func() { time.Sleep(time.Until(over)) }
}

// A member never reads back an older value than one it acknowledged,
// whatever became of its writes: refused (OOM), unanswered until their
// deadline (CLIENT PAUSE, DEBUG SLEEP), or arriving late and out of order
// after a later one. Only a change another member makes afterwards
// replaces it. Before, its own update read back as the older session
// Redis kept (or a miss), as soon as the write's deadline had passed.
func TestOwnWritesNeverReadBackOlder(t *testing.T) {
	srv := redistest.Single(t, redistest.WithConfig("enable-debug-command yes"))
	r := srv.Client(t)
	for _, f := range writeFaults {
		t.Run(f.name, func(t *testing.T) {
			a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 50 * time.Millisecond})
			b := newMember(t, conf{addrs: []string{srv.Addr}})
			waitTracking(t, a)
			waitTracking(t, b)
			id := "id-" + f.name
			now := time.Now()
			putShared(t, a, id, now, []byte("v0"))
			older := map[string]bool{"v0": true}
			check := func(when string, got, want string, missOK bool) {
				t.Helper()
				if got != want && !(missOK && got == "") {
					t.Fatalf("%s: Get = %q, want %q (older: %v); stats %+v", when, got, want, older[got], a.FleetStats())
				}
			}
			end := f.start(t, r)
			ended := false
			defer func() {
				if !ended {
					end()
				}
			}()
			last := ""
			for i := 1; i <= 5; i++ {
				v := fmt.Sprint("v", i)
				if err := a.Put(ctx, id, entry(now.Add(time.Duration(i)), v)); err != nil {
					t.Fatal(err)
				}
				if last != "" {
					older[last] = true
				}
				last = v
				// Until the writer has had its answer, or given up.
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				a.Sync(sctx)
				cancel()
				check(fmt.Sprintf("after update %d", i), lookup(a, id), v, false)
			}
			if st := a.FleetStats(); st.UpdatesUnshared == 0 {
				t.Fatalf("no update was unshared: the fault did not work; %+v", st)
			}
			end()
			ended = true
			// Redis back: lookups answered by Redis (whatever it holds)
			// or, while the breaker still probes, by the fallback (a miss
			// is allowed there: a late write may have spoilt the copy).
			deadline := time.Now().Add(15 * time.Second)
			for start, up := time.Now(), 0; up < 50; time.Sleep(5 * time.Millisecond) {
				st := a.FleetStats()
				ok := st.Backend.State == redisconn.StateUp && time.Since(start) > time.Second
				check("after the fault", lookup(a, id), last, !ok)
				if ok {
					up++
				}
				if time.Now().After(deadline) {
					t.Fatalf("Redis still %s 15 s after the fault", st.Backend.State)
				}
			}
			// Another member's later update is newer.
			waitTracking(t, a)
			put(t, b, id, now.Add(time.Minute), []byte("fleet"))
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				settle(t, a)
				got := lookup(a, id)
				if got == "fleet" {
					break
				}
				check("after another member's update", got, last, false)
				if time.Now().After(deadline) {
					t.Fatalf("a still answers %q 5 s after another member's update", got)
				}
			}
			t.Logf("%s: stats %+v; log %q", f.name, a.FleetStats(), a.log.Lines())
		})
	}
}

// An update the fleet does not get is logged, not only counted: the
// first at once, whatever the cause (here a single write that ran into
// its deadline, which the breaker does not report), then at most one a
// period. Before, a lone timed-out update was counted and nothing logged.
func TestUnsharedUpdatesLogged(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}, timeout: 50 * time.Millisecond})
	waitTracking(t, a)
	if err := r.Do(ctx, "CLIENT", "PAUSE", 20000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	defer r.Do(ctx, "CLIENT", "UNPAUSE")
	if err := a.Put(ctx, "lone", entry(time.Now(), "s")); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	st := a.FleetStats()
	if st.UpdatesUnshared != 1 || st.Backend.State != redisconn.StateUp {
		t.Fatalf("stats %+v: want one unshared update, the breaker closed", st)
	}
	if n := a.log.Count("warn", "an update not shared with the fleet ("); n != 1 {
		t.Fatalf("the unshared update logged %d times: %q", n, a.log.Lines())
	}
	// More within the period: counted, one line at most for them all.
	for i := range 20 {
		a.Put(ctx, fmt.Sprint("more-", i), entry(time.Now(), "s"))
	}
	settle(t, a)
	if st := a.FleetStats(); st.UpdatesUnshared != 21 {
		t.Errorf("%d unshared updates, want 21", st.UpdatesUnshared)
	}
	if n := a.log.Count("warn", "not shared with the fleet"); n != 1 {
		t.Errorf("%d lines for 21 unshared updates in a moment: %q", n, a.log.Lines())
	}
	a.clientLog.Reset()
}

// Liveness cannot be faked: a client publishing on __redis__:invalidate
// all the time does not keep a tracker that lost its tracking connection
// looking alive. Before, the stream of messages kept the heartbeat from
// ever pinging, and the member served a deleted session for as long as
// it lasted, with tracking "on" in its stats.
func TestTrackerLivenessNotFakedByPublish(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	now := time.Now()
	put(t, b, "id", now, []byte("v1"))
	readTrusted(t, a, "id", "v1")

	srv.ForgeInvalidations(t, "tlsmgr:c:smtpd:nobody-has-this")
	time.Sleep(500 * time.Millisecond) // the stream is flowing

	// Redis stops telling a: the tracking connections go, quietly.
	if srv.KillClients(t, "t") == 0 {
		t.Fatal("no tracking connection to cut")
	}
	if ok, err := b.Delete(ctx, "id"); !ok || err != nil {
		t.Fatalf("b.Delete = %v, %v", ok, err)
	}
	d := eventually(t, a, "id", "", 5*time.Second)
	t.Logf("with invalidations published by another client, a stops serving the deleted copy %v after the delete", d)
	if limit := 2 * time.Second; d > limit {
		t.Errorf("a served the deleted copy for %v, over %v", d, limit)
	}
	// Tracking comes back on its own proof, the stream notwithstanding.
	waitTracking(t, a)
	put(t, b, "id", now, []byte("v2"))
	wantEntry(t, a, "id", now, []byte("v2"))
	wantEntry(t, a, "id", now, []byte("v2"))
	if st := a.FleetStats(); st.LocalHits == 0 {
		t.Errorf("no copy trusted once tracking is back: %+v", st)
	}
}

// A subscriber connection that stops answering (black-holed) while the
// tracking connection and every other still work is noticed: its copies
// are no longer trusted within trackFresh, and tracking turns off.
func TestTrackerSubscriberStopsAnswering(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	a := newMember(t, conf{addrs: []string{px.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	now := time.Now()
	put(t, b, "id", now, []byte("v1"))
	readTrusted(t, a, "id", "v1")

	px.BlackHoleWhere(redistest.Contains("subscribe"))
	t.Cleanup(px.Restore)
	if px.Holed() != 1 {
		t.Fatalf("%d connections black-holed, want a's subscriber", px.Holed())
	}
	if ok, err := b.Delete(ctx, "id"); !ok || err != nil {
		t.Fatalf("b.Delete = %v, %v", ok, err)
	}
	d := eventually(t, a, "id", "", 5*time.Second)
	t.Logf("subscriber black-holed: the deleted copy is served no more after %v", d)
	if limit := 2 * time.Second; d > limit {
		t.Errorf("a served the deleted copy for %v, over %v", d, limit)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.FleetStats().Tracking != "off" {
		if time.Now().After(deadline) {
			t.Fatal("tracking still on 5 s after the subscriber stopped answering")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.wantRedisOnly(t) // the other connections kept working
	px.Restore()
	waitTracking(t, a)
	put(t, b, "id", now, []byte("v2"))
	wantEntry(t, a, "id", now, []byte("v2"))
}

// Another member's change that arrives between Redis's answer to a
// lookup and the decision to keep that answer as a trusted copy: the
// answer is returned (it was Redis's value when asked), but not trusted.
func TestChangeBetweenAnswerAndTrust(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	put(t, b, "id", now, []byte("v1"))
	settle(t, a)
	var once sync.Once
	a.afterRead = func(string) {
		once.Do(func() {
			put(t, b, "id", now.Add(time.Second), []byte("v2"))
			// a has applied the invalidation.
			if err := a.tracker.Sync(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wantEntry(t, a, "id", now, []byte("v1"))
	a.afterRead = nil
	wantEntry(t, a, "id", now.Add(time.Second), []byte("v2"))
	wantEntry(t, a, "id", now.Add(time.Second), []byte("v2"))
}

// Every entry goes to Redis with its expiry, alone or in a pipeline of
// many: without one Redis would keep it for ever.
func TestEntriesExpireInRedis(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	const n = 300
	start := time.Now()
	expires := func(i int) time.Time { return start.Add(time.Hour + time.Duration(i)*time.Second) }
	// Alone in the queue (no Sync's marker behind it): a plain SET.
	if err := a.Put(ctx, "alone", scache.Entry{Written: start, Expires: start.Add(time.Hour), Session: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	for r.Exists(ctx, a.writeKey("alone")).Val() == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the update never reached Redis")
		}
		time.Sleep(time.Millisecond)
	}
	settle(t, a)
	ops := a.FleetStats().Backend.Ops
	for i := range n {
		e := scache.Entry{Written: start, Expires: expires(i), Session: []byte("s")}
		if err := a.Put(ctx, fmt.Sprint("id-", i), e); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, a)
	if calls := a.FleetStats().Backend.Ops - ops; calls >= n {
		t.Fatalf("%d calls for %d updates: not pipelined", calls, n)
	}
	check := func(id string, exp time.Time) {
		t.Helper()
		pttl, err := r.PTTL(ctx, a.writeKey(id)).Result()
		// At most what was left when the test began (rounded up to the
		// millisecond); at least what is left now, bar Redis's clock.
		most, least := exp.Sub(start)+time.Millisecond, time.Until(exp)-5*time.Second
		if err != nil || pttl > most || pttl < least {
			t.Fatalf("%s: PTTL %v, %v; want between %v and %v", id, pttl, err, least, most)
		}
	}
	check("alone", start.Add(time.Hour))
	for i := range n {
		check(fmt.Sprint("id-", i), expires(i))
	}
	// And the keys of an update with nothing to share are gone.
	if err := a.Put(ctx, "id-0", scache.Entry{Written: start, Expires: start.Add(-time.Second), Session: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	if err := r.Get(ctx, a.writeKey("id-0")).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("an expired update left the older value in Redis: %v", err)
	}
}

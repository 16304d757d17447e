package integration

// A Redis outage that spans epoch boundaries of the fleet's ticket-key
// ring, with real daemons on a real redis-server and the real clock.

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// epochHalf is H in seconds with the shortest session timeout a daemon
// accepts: smaller values are raised to config.MinSessionTimeout (120s,
// Postfix's TLS_SESSION_LIFEMIN), so epochs last a minute at least.
const epochHalf = int64(config.MinSessionTimeout/time.Second) / 2

// The epoch arithmetic of internal/tktkey/fleet.go: epoch e's key encrypts from
// epochStart(e) until its Expiry, epochStart(e+1), and decrypts until
// Expiry + H.
func epochAt(t time.Time) int64        { return floorDivInt(t.Unix()+1, epochHalf) }
func epochStart(e int64) time.Time     { return time.Unix(e*epochHalf-1, 0) }
func epochExpiry(e int64) int64        { return (e+1)*epochHalf - 1 }
func floorDivInt(a, b int64) (q int64) { return (a - ((a%b)+b)%b) / b }

// ringKey is one line of tlsmgrctl keys.
type ringKey struct {
	epoch  int64
	name   string // hex
	source string // fleet, local or spare
}

// ringKeys runs tlsmgrctl keys against s and parses its lines.
func (s *standalone) ringKeys(t *testing.T) []ringKey {
	t.Helper()
	var out []ringKey
	for _, line := range strings.Split(strings.TrimSpace(ctlOut(t, s.Sock, "keys")), "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		var k ringKey
		for _, f := range strings.Fields(line) {
			name, v, _ := strings.Cut(f, "=")
			switch name {
			case "epoch":
				k.epoch, _ = strconv.ParseInt(v, 10, 64)
			case "name":
				k.name = v
			case "source":
				k.source = v
			}
		}
		if k.name == "" || k.source == "" {
			t.Fatalf("tlsmgrctl keys: cannot parse %q", line)
		}
		out = append(out, k)
	}
	return out
}

// source is how s's ring lists the key named name ("" if absent).
func (s *standalone) source(t *testing.T, name [proto.TicketNameLen]byte) (epoch int64, source string) {
	t.Helper()
	for _, k := range s.ringKeys(t) {
		if k.name == fmt.Sprintf("%x", name) {
			return k.epoch, k.source
		}
	}
	return 0, ""
}

// epochMember is one daemon of the fleet with a client of its own.
type epochMember struct {
	name string
	s    *standalone
	p    *daemontest.Proc
	c    *client.Client

	paused, resumed int // lengths of the log when Redis stopped and when it continued
}

// logCount counts the lines of the member's log from offset from on
// that hold every part.
func (m *epochMember) logCount(from int, parts ...string) int {
	return countLines(m.p.Stderr.String()[from:], parts...)
}

func countLines(text string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			n++
		}
	}
	return n
}

// outageTimer times the requests made while Redis is away, in groups (one
// of each kind of request to a member).
type outageTimer struct {
	bound      time.Duration // for one request, on average over a group
	n, over    int           // requests timed, and those slower than bound
	worst      time.Duration // the slowest request
	worstGroup time.Duration
	groupStart time.Time
	groupSize  int
	slow       []string // groups slower than groupSize * bound
}

func (o *outageTimer) time(t *testing.T, what string, f func() error) {
	t.Helper()
	start := time.Now()
	err := f()
	d := time.Since(start)
	o.n++
	o.worst = max(o.worst, d)
	if d > o.bound {
		o.over++
	}
	if err != nil {
		t.Fatalf("%s during the outage: %v", what, err)
	}
}

func (o *outageTimer) begin() { o.groupStart, o.groupSize = time.Now(), o.n }

func (o *outageTimer) end(who string) {
	d, size := time.Since(o.groupStart), o.n-o.groupSize
	o.worstGroup = max(o.worstGroup, d)
	if d > time.Duration(size)*o.bound && len(o.slow) < 20 {
		o.slow = append(o.slow, fmt.Sprintf("%d requests to %s took %v at %s", size, who, d, time.Now().Format("15:04:05.000")))
	}
}

// TestFleetOutageAcrossEpochs: two members share the ring; Redis is
// stopped (SIGSTOP) just before epoch P starts and kept stopped into
// epoch P+1. Through epoch P both encrypt with P's fleet key, loaded
// before the outage; at P+1 each makes a local key, which it (and only
// it) returns by name while Redis is away. Every request is answered
// within the timeout plus a margin throughout. Once Redis continues,
// both rejoin by themselves: the same ring digest, the same fleet key to
// encrypt with, and A still returns its local key by name. The log tells
// each transition once.
//
// Epochs last at least a minute (see epochHalf), so this test takes 80
// to 140 seconds: it waits for the end of an epoch (up to a minute),
// keeps Redis stopped for a whole epoch, and the members refresh the
// ring at the next point of their schedule, H/4 into the epoch.
func TestFleetOutageAcrossEpochs(t *testing.T) {
	if testing.Short() {
		t.Skip("spans two ticket-key epochs of a minute each")
	}
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	ctx := context.Background()
	var members []*epochMember
	for _, name := range []string{"A", "B"} {
		s := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf, "tlsmgr_ticket_key_database=redis:"+cf,
			fmt.Sprintf("smtpd_tls_session_cache_timeout=%ds", 2*epochHalf))
		m := &epochMember{name: name, s: s, p: s.start(t)}
		m.c = s.client()
		t.Cleanup(func() { m.c.Close() })
		members = append(members, m)
	}
	a, b := members[0], members[1]

	// Both started (and made their first refresh) in an epoch before P,
	// so their rings hold P's key; their first refresh in P is H/4 into
	// it. Stopping Redis between the last refresh of P-1 (3H/4 plus a
	// jitter of at most H/16 into it) and that one leaves them with a
	// ring that runs out at the start of P+1.
	p := epochAt(time.Now()) + 1
	pauseAt := epochStart(p).Add(-8 * time.Second)
	t.Logf("epochs of %ds; waiting %v for the outage to start 8s before epoch %d",
		epochHalf, time.Until(pauseAt).Round(time.Second), p)
	time.Sleep(time.Until(pauseAt))

	// Before the outage: one ring, P's key already loaded everywhere, and
	// a key issued by A returned by name by B.
	digest := a.s.stat(t, proto.RingDigestStat)
	if digest == "" {
		t.Fatal("no ring digest")
	}
	var nextKey string
	for _, m := range members {
		if d := m.s.stat(t, proto.RingDigestStat); d != digest {
			t.Fatalf("before the outage %s has ring digest %s, A %s", m.name, d, digest)
		}
		found := false
		for _, k := range m.s.ringKeys(t) {
			if k.epoch == p && k.source == "fleet" {
				if nextKey != "" && k.name != nextKey {
					t.Fatalf("%s holds another key for epoch %d", m.name, p)
				}
				nextKey, found = k.name, true
			}
		}
		if !found {
			t.Fatalf("%s has not loaded the key of epoch %d 8s before it starts: %+v", m.name, p, m.s.ringKeys(t))
		}
	}
	before, err := a.c.TicketKey(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if before.Expiry != epochExpiry(p-1) {
		t.Fatalf("A encrypts with a key expiring at %d in epoch %d, want %d", before.Expiry, p-1, epochExpiry(p-1))
	}
	if got, err := b.c.TicketKey(ctx, before.Name[:]); err != nil || got != before {
		t.Fatalf("B does not return A's key by name: %v", err)
	}
	if err := a.c.Update(ctx, "smtpd", "before", []byte("written before the outage")); err != nil {
		t.Fatal(err)
	}
	if time.Now().After(epochStart(p).Add(10 * time.Second)) {
		t.Fatalf("the checks before the outage ended %v into epoch %d, too close to its first refresh",
			time.Since(epochStart(p)), p)
	}

	for _, m := range members {
		m.paused = len(m.p.Stderr.String())
	}
	srv.Pause()
	paused := true
	defer func() {
		if paused {
			srv.Resume()
		}
	}()
	t.Logf("Redis stopped at %s", time.Now().Format("15:04:05.000"))

	// The outage. The timeout is 20ms; on a shared 2-core VM under -race
	// the margin is wider than the design's few ms (the benchmark
	// measures those), and as in TestFleetRedisOutage the bound holds on
	// average over each group of five requests: over ten runs the
	// slowest single request of some 6,400 took 22 to 148ms, the latter
	// while other suites ran on the machine. A request that waited for
	// Redis would take seconds.
	timer := &outageTimer{bound: 20*time.Millisecond + 80*time.Millisecond}
	local := map[string]proto.TicketKey{} // by member: the key made during the outage
	var fleetP proto.TicketKey            // epoch P's fleet key, as A encrypts with it
	for i := 0; len(local) < len(members); i++ {
		if time.Now().After(epochStart(p + 1).Add(20 * time.Second)) {
			t.Fatalf("no local keys 20s into epoch %d: %v", p+1, local)
		}
		for _, m := range members {
			id := fmt.Sprintf("outage-%s-%d", m.name, i)
			timer.begin()
			timer.time(t, m.name+" update", func() error { return m.c.Update(ctx, "smtpd", id, []byte("during")) })
			timer.time(t, m.name+" lookup", func() error {
				got, err := m.c.Lookup(ctx, "smtpd", id)
				if err == nil && string(got) != "during" {
					err = fmt.Errorf("lookup of %s returned %q", id, got)
				}
				return err
			})
			timer.time(t, m.name+" seed", func() error { _, err := m.c.Seed(ctx, 32); return err })
			var k proto.TicketKey
			timer.time(t, m.name+" tktkey", func() (err error) { k, err = m.c.TicketKey(ctx, nil); return err })
			var bogus [proto.TicketNameLen]byte
			rand.Read(bogus[:])
			timer.time(t, m.name+" tktkey by unknown name", func() error {
				if _, err := m.c.TicketKey(ctx, bogus[:]); !isNotFound(err) {
					return fmt.Errorf("a bogus name: %v", err)
				}
				return nil
			})
			timer.end(m.name)
			switch {
			case k.Expiry == epochExpiry(p):
				// Epoch P: the key loaded before the outage.
				if fmt.Sprintf("%x", k.Name) != nextKey {
					t.Fatalf("%s encrypts in epoch %d with %x, not the fleet's %s loaded before the outage", m.name, p, k.Name, nextKey)
				}
				if m == a {
					fleetP = k
				}
			case k.Expiry == epochExpiry(p+1):
				if _, ok := local[m.name]; !ok {
					if e, src := m.s.source(t, k.Name); e != p+1 || src != "local" {
						t.Fatalf("%s encrypts in epoch %d with a key listed as epoch %d %q, want a local key", m.name, p+1, e, src)
					}
					local[m.name] = k
					t.Logf("%s made a local key at %s", m.name, time.Now().Format("15:04:05.000"))
				} else if k != local[m.name] {
					t.Fatalf("%s made a second local key in epoch %d", m.name, p+1)
				}
			case k != before:
				t.Fatalf("%s encrypts with a key expiring at %d, at %v (epoch %d)", m.name, k.Expiry, time.Now(), epochAt(time.Now()))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fleetP.Expiry == 0 {
		t.Fatalf("A never encrypted with epoch %d's key", p)
	}
	mine := local["A"]
	if mine == local["B"] || mine.Name == fleetP.Name || mine.Name == before.Name {
		t.Fatal("the local keys are not new keys")
	}
	// Still accepted where it was issued, and only there.
	timer.begin()
	timer.time(t, "A's local key by name at A", func() error {
		got, err := a.c.TicketKey(ctx, mine.Name[:])
		if err == nil && got != mine {
			err = fmt.Errorf("another key for its name")
		}
		return err
	})
	timer.end("A")
	if _, err := b.c.TicketKey(ctx, mine.Name[:]); !isNotFound(err) {
		t.Fatalf("B answers A's local key during the outage: %v", err)
	}
	if got, err := a.c.TicketKey(ctx, fleetP.Name[:]); err != nil || got != fleetP {
		t.Errorf("epoch %d's fleet key no longer decrypts at A: %v", p, err)
	}
	for _, m := range members {
		if st := m.s.stats(t); st["tktkey_local_keys"] != "1" || st["tktkey_fleet_up"] != "no" || st["smtpd_cache_redis_state"] == "up" {
			t.Errorf("%s during the outage: tktkey_local_keys %s, tktkey_fleet_up %s, smtpd_cache_redis_state %s",
				m.name, st["tktkey_local_keys"], st["tktkey_fleet_up"], st["smtpd_cache_redis_state"])
		}
	}
	t.Logf("outage: %d requests, slowest %v, %d slower than %v; slowest group of five %v",
		timer.n, timer.worst, timer.over, timer.bound, timer.worstGroup)
	for _, o := range timer.slow {
		t.Errorf("during the outage: %s, bound %v each", o, timer.bound)
	}

	for _, m := range members {
		m.resumed = len(m.p.Stderr.String())
	}
	srv.Resume()
	paused = false
	resumed := time.Now()
	t.Logf("Redis continued at %s", resumed.Format("15:04:05.000"))

	// Both rejoin by themselves; the breakers probe with the traffic that
	// comes, so keep some, and the ring is refreshed on the members'
	// schedule (at the latest at the next point, H/2 away).
	limit := time.Duration(epochHalf/2+15) * time.Second
	var cur proto.TicketKey
	for {
		if time.Since(resumed) > limit {
			for _, m := range members {
				t.Logf("%s stats: %v\n%s keys:\n%s\n%s log:\n%s", m.name, m.s.stats(t), m.name,
					ctlOut(t, m.s.Sock, "keys"), m.name, m.p.Stderr)
			}
			t.Fatalf("the members have not rejoined %v after Redis continued", limit)
		}
		for _, m := range members {
			m.c.Lookup(ctx, "smtpd", "before")
			var bogus [proto.TicketNameLen]byte
			rand.Read(bogus[:])
			m.c.TicketKey(ctx, bogus[:])
		}
		time.Sleep(100 * time.Millisecond)
		sa, sb := a.s.stats(t), b.s.stats(t)
		ready := true
		for _, st := range []map[string]string{sa, sb} {
			ready = ready && st["smtpd_cache_redis_state"] == "up" && st["redis_tktkey_state"] == "up" && st["tktkey_fleet_up"] == "yes"
		}
		if !ready || sa[proto.RingDigestStat] == "" || sa[proto.RingDigestStat] != sb[proto.RingDigestStat] {
			continue
		}
		ka, err := a.c.TicketKey(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := b.c.TicketKey(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ka == kb {
			cur = ka
			break
		}
	}
	t.Logf("rejoined %v after Redis continued", time.Since(resumed).Round(time.Millisecond))
	for _, m := range members {
		if e, src := m.s.source(t, cur.Name); src != "fleet" || e != epochAt(time.Unix(cur.Expiry-1, 0)) {
			t.Errorf("%s encrypts with %x, listed as epoch %d %q; want the fleet's", m.name, cur.Name, e, src)
		}
	}
	// The local key has not expired (it decrypts until Expiry + H, an
	// epoch after it stopped encrypting): A still returns it.
	if now := time.Now().Unix(); mine.Expiry+epochHalf <= now {
		t.Fatalf("the test is late: A's local key expired %ds ago", now-mine.Expiry-epochHalf)
	}
	if got, err := a.c.TicketKey(ctx, mine.Name[:]); err != nil || got != mine {
		t.Errorf("A no longer returns the local key it issued during the outage: %v", err)
	}
	// A's local key became the fleet's key of epoch P+1 if A offered it
	// first; then B returns it too, otherwise only A does.
	_, src := a.s.source(t, mine.Name)
	got, err := b.c.TicketKey(ctx, mine.Name[:])
	switch {
	case src == "fleet":
		t.Logf("A's local key became the fleet's key of epoch %d", p+1)
		if err != nil || got != mine {
			t.Errorf("A's local key is the fleet's, yet B does not return it: %v", err)
		}
	case src == "local":
		t.Logf("the fleet's key of epoch %d is not A's; A keeps its own as a local key", p+1)
		if !isNotFound(err) {
			t.Errorf("B returns A's local key (%v)", err)
		}
	default:
		t.Errorf("A lists its local key as %q after the rejoin", src)
	}

	// The log tells each transition of the outage once, not per request
	// (counted from when Redis stopped: what a loaded machine makes a
	// member log before is no part of this outage).
	for _, m := range members {
		for _, c := range []struct {
			what  string
			parts []string
		}{
			{"the smtpd cache's Redis going", []string{"Redis smtpd (", "unavailable"}},
			{"the smtpd cache's Redis back", []string{"Redis smtpd (", "available again"}},
			{"the ring's Redis going", []string{"Redis tktkey (", "unavailable"}},
			{"the ring's Redis back", []string{"Redis tktkey (", "available again"}},
			{"the ring's refresh failing", []string{"cannot refresh the fleet ring"}},
			{"the ring refreshed again", []string{"fleet ring refreshed again"}},
			{"the local key", []string{fmt.Sprintf("no fleet key for epoch %d (store unavailable); using a local key", p+1)}},
			{"the local key's fate", []string{fmt.Sprintf("of epoch %d ", p+1), "local key"}},
		} {
			// A state shows a moment before its log line is written.
			n := m.logCount(m.paused, c.parts...)
			for deadline := time.Now().Add(2 * time.Second); n == 0 && time.Now().Before(deadline); n = m.logCount(m.paused, c.parts...) {
				time.Sleep(20 * time.Millisecond)
			}
			if n != 1 {
				t.Errorf("%s logs %s %d times, want once", m.name, c.what, n)
			}
		}
		// The smtpd cache's invalidation tracker says it lost Redis only
		// if the breaker has not said so first (either may notice
		// first): at most once while Redis is stopped, never back on
		// then, and back on after Redis continued if it said so.
		outage := m.p.Stderr.String()[m.paused:m.resumed]
		lost := countLines(outage, "Redis smtpd: invalidation tracking lost")
		if on := countLines(outage, "Redis smtpd: invalidation tracking on again"); lost > 1 || on != 0 {
			t.Errorf("%s logs while Redis is stopped the tracker lost %d times and on again %d times", m.name, lost, on)
		}
		back := func() int { return m.logCount(m.resumed, "Redis smtpd: invalidation tracking on again") }
		for deadline := time.Now().Add(10 * time.Second); back() < lost && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if lost == 1 && back() == 0 {
			t.Errorf("%s logs the tracker lost during the outage, never on again", m.name)
		}
		if n := m.logCount(m.paused, "using a local key"); n != 1 {
			t.Errorf("%s logs %d local keys, want 1", m.name, n)
		}
		if v := m.s.stat(t, "log_warnings_suppressed"); v != "0" {
			t.Errorf("%s suppressed %s warnings", m.name, v)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", m.name, m.p.Stderr)
		} else if testing.Verbose() {
			var lines []string
			for _, line := range strings.Split(m.p.Stderr.String(), "\n") {
				if strings.Contains(line, "Redis") || strings.Contains(line, "ticket keys") {
					lines = append(lines, line)
				}
			}
			t.Logf("%s's transitions:\n%s", m.name, strings.Join(lines, "\n"))
		}
	}
}

package redisstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/redis/go-redis/v9"
)

var ctx = context.Background()

// Correctness tests run with a patient timeout, so that a slow CI machine
// never turns a Redis answer into a fallback; the outage tests use the
// default 10 ms, which is what they measure.
const (
	patient = time.Second
	timeout = settings.DefaultTimeout
	// slack is what latency assertions allow past the deadline on a loaded
	// 2-core machine under the race detector; the real figures are logged.
	slack = 40 * time.Millisecond
)

var roomy = scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 24}

// Seal keys of the tests: fixed, so failures reproduce.
var (
	k1 = sha256.Sum256([]byte("redisstore test seal key 1"))
	k2 = sha256.Sum256([]byte("redisstore test seal key 2"))
	k3 = sha256.Sum256([]byte("redisstore test seal key 3"))
)

type recLog = testlog.Recorder

// conf describes one member's view of the fleet.
type conf struct {
	addrs   []string
	cluster bool
	timeout time.Duration // patient if 0
	prefix  string        // settings.DefaultKeyPrefix if ""
	cache   string        // "smtpd" if ""
	keys    [][32]byte    // {k1} if nil
	lim     scache.Limits // roomy if zero
}

// member is one daemon's store, with the client and logs behind it.
type member struct {
	*Store
	client    *redisconn.Client
	log       *recLog // the store's
	clientLog *recLog // the client's: breaker transitions
}

func newMember(t testing.TB, c conf) *member {
	t.Helper()
	if c.timeout == 0 {
		c.timeout = patient
	}
	if c.prefix == "" {
		c.prefix = settings.DefaultKeyPrefix
	}
	if c.cache == "" {
		c.cache = "smtpd"
	}
	if c.keys == nil {
		c.keys = [][32]byte{k1}
	}
	if c.lim == (scache.Limits{}) {
		c.lim = roomy
	}
	s := &settings.Settings{
		Path:      "/etc/postfix/tlsmgr-redis.cf",
		Servers:   c.addrs,
		Cluster:   c.cluster,
		Timeout:   c.timeout,
		KeyPrefix: c.prefix,
		SealKeys:  c.keys,
	}
	m := &member{log: &recLog{}, clientLog: &recLog{}}
	client, err := redisconn.New(s, m.clientLog.Logger(), c.cache)
	if err != nil {
		t.Fatalf("redisconn.New: %v", err)
	}
	sealer, err := seal.New(c.keys)
	if err != nil {
		t.Fatalf("seal.New: %v", err)
	}
	st, err := New(client, sealer, c.prefix, c.cache, c.lim, m.log.Logger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.Store, m.client = st, client
	// Closed in the order the daemon would: store, client, sealer.
	t.Cleanup(func() {
		sealer.Close()
		client.Close()
	})
	return m
}

// put stores an entry and, for a member, waits until Redis has it.
func put(t testing.TB, s scache.Store, id string, written time.Time, session []byte) {
	t.Helper()
	e := scache.Entry{Written: written, Expires: time.Now().Add(time.Hour), Session: session}
	if err := s.Put(ctx, id, e); err != nil {
		t.Fatalf("Put(%q): %v", id, err)
	}
	settle(t, s)
}

// settle waits until a member's writes have reached Redis and the
// invalidations Redis sent it have been applied: after settle(a) and
// settle(b), b sees what a did before. Other stores need nothing.
func settle(t testing.TB, s scache.Store) {
	t.Helper()
	if m, ok := s.(interface{ Sync(context.Context) error }); ok {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := m.Sync(sctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
}

func wantEntry(t testing.TB, s scache.Store, id string, written time.Time, session []byte) {
	t.Helper()
	settle(t, s)
	e, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	if !e.Written.Equal(written) {
		t.Errorf("Get(%q).Written = %v, want %v", id, e.Written, written)
	}
	if !bytes.Equal(e.Session, session) {
		t.Errorf("Get(%q).Session = %q, want %q", id, e.Session, session)
	}
}

func wantMiss(t testing.TB, s scache.Store, id string) {
	t.Helper()
	settle(t, s)
	e, err := s.Get(ctx, id)
	if !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("Get(%q) = %v, %v; want scache.ErrNotFound", id, e, err)
	}
}

// wantAnswer checks what m answers for id (want nil: a miss) once Redis
// answers the lookup rather than the fallback. A member with the default
// timeout on a loaded machine misses its deadline now and then, and its
// fallback answers instead, which is what the outage tests check, not
// this: such a lookup is made again, for up to 10 s, and may only have
// answered want or a miss.
func wantAnswer(t testing.TB, m *member, id string, written time.Time, want []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(t, m)
		before := m.FleetStats()
		e, err := m.Get(ctx, id)
		after := m.FleetStats()
		fellBack := after.FallbackHits+after.FallbackMisses != before.FallbackHits+before.FallbackMisses
		if err != nil && !errors.Is(err, scache.ErrNotFound) {
			t.Fatalf("Get(%q): %v", id, err)
		}
		got := []byte(nil)
		if err == nil {
			got = e.Session
		}
		if !fellBack || err == nil && !bytes.Equal(got, want) {
			if !bytes.Equal(got, want) || err == nil && !e.Written.Equal(written) {
				t.Fatalf("Get(%q) = %q written %v (fallback %v); want %q written %v", id, got, e.Written, fellBack, want, written)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get(%q): Redis did not answer in 10 s; stats %+v", id, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantRedisOnly checks that every lookup and change of m reached Redis:
// tests of the shared path must not pass by falling back.
func (m *member) wantRedisOnly(t testing.TB) {
	t.Helper()
	st := m.FleetStats()
	if st.FallbackHits+st.FallbackMisses+st.UpdatesUnshared+st.DeletesUnshared != 0 || st.Backend.Errors != 0 {
		t.Errorf("Redis did not answer everything: %+v", st)
	}
}

// lateness is the machine's measured wake-up lateness (testenv.Lateness),
// with the bound this package's calls get past their deadline.
type lateness struct{ *testenv.Lateness }

func watchLateness(t *testing.T) *lateness { return &lateness{testenv.WatchLateness(t)} }

// late is the worst lateness seen so far.
func (l *lateness) late() time.Duration { return l.Late() }

// slack is what a bound on a call's duration allows past its deadline.
func (l *lateness) slack() time.Duration { return slack + l.Late() }

// putShared stores an entry through m and waits until m has seen Redis
// hold it (its copy settled, trusted and clean), as set-up of a test that
// then cuts Redis off; retried when a loaded machine made one of its
// calls miss the deadline.
func putShared(t testing.TB, m *member, id string, written time.Time, session []byte) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		put(t, m, id, written, session)
		if m.verified(id) {
			return
		}
		if attempt == 50 {
			t.Fatalf("Put(%q): never seen in Redis in %d attempts; stats %+v", id, attempt, m.FleetStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verified says that m's copy of id is its own write, seen in Redis.
func (m *member) verified(id string) bool {
	m.tmu.Lock()
	defer m.tmu.Unlock()
	sl := m.slots[m.writeKey(id)]
	return sl != nil && sl.own != nil && sl.own.settled && sl.trusted && sl.clean && sl.cleanEpoch == m.tracker.Epoch()
}

func (m *member) localHas(id string) bool {
	_, err := m.local.Get(ctx, id)
	return err == nil
}

// latencies gathers call durations for the log and the assertions.
type latencies []time.Duration

func (l latencies) max() time.Duration { return slices.Max(l) }
func (l latencies) quantile(q float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}
func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), l.quantile(0.5), l.quantile(0.99), l.max())
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// deadServer returns the address of a Redis that was started and then
// killed: connections to it are refused.
func deadServer(t testing.TB) string {
	srv := redistest.Single(t)
	srv.Stop()
	return srv.Addr
}

// allKeys returns every key in the server's database.
func allKeys(t testing.TB, c *redis.Client) []string {
	t.Helper()
	var keys []string
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

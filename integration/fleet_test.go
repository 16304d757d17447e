package integration

// A fleet: several real daemons sharing one real redis-server.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// fleetSettings writes a Redis settings file and its seal key file (both
// 0600, as start-up demands) and returns the settings file's path.
func fleetSettings(t *testing.T, servers []string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(dir, "seal.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("servers = %s\nseal_key_file = %s\ntimeout = 20ms\n", strings.Join(servers, ", "), keyFile)
	for _, e := range extra {
		text += e + "\n"
	}
	path := filepath.Join(dir, "tlsmgr-redis.cf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// within polls cond until it holds, for at most limit, and returns how
// long that took.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return time.Since(start)
}

// startFleet starts n daemons with the same settings.
func startFleet(t *testing.T, n int, settings ...string) []*standalone {
	t.Helper()
	members := make([]*standalone, n)
	for i := range members {
		members[i] = newStandalone(t, settings...)
		members[i].start(t)
	}
	return members
}

// stat is one value of a stats reply.
func (s *standalone) stat(t *testing.T, name string) string {
	t.Helper()
	v, ok := s.stats(t)[name]
	if !ok {
		t.Fatalf("stats lack %s", name)
	}
	return v
}

// waitStat waits until the daemon's stat name has the value want.
func (s *standalone) waitStat(t *testing.T, name, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := s.stats(t)[name]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q after %v, want %q", name, got, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFleetTicketKeys: three daemons on one Redis hand out the same
// ticket key, each answers the others' key by name, and a fourth started
// later adopts the ring: every member shows the same ring digest.
func TestFleetTicketKeys(t *testing.T) {
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	members := startFleet(t, 3, "tlsmgr_ticket_key_database=redis:"+cf)
	ctx := context.Background()
	a := members[0].client()
	defer a.Close()
	k, err := a.TicketKey(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	digest := members[0].stat(t, "tktkey_ring_digest")
	if digest == "" {
		t.Fatal("no ring digest")
	}
	for i, m := range members {
		c := m.client()
		got, err := c.TicketKey(ctx, k.Name[:])
		c.Close()
		if err != nil || got != k {
			t.Fatalf("member %d does not return member 0's key by name: %v", i, err)
		}
		// A member whose ring load at start missed its 20ms (a loaded
		// machine) loads it again a second later; meanwhile it found the
		// key by name.
		if d := within(t, 5*time.Second, fmt.Sprintf("member %d to hold member 0's ring", i), func() bool {
			return m.stat(t, "tktkey_ring_digest") == digest
		}); d > 100*time.Millisecond {
			t.Logf("member %d showed member 0's ring digest after %v", i, d)
		}
		if mode := m.stat(t, "tktkey_mode"); mode != "fleet" {
			t.Errorf("member %d tktkey_mode = %s", i, mode)
		}
	}
	late := newStandalone(t, "tlsmgr_ticket_key_database=redis:"+cf)
	late.start(t)
	within(t, 5*time.Second, "a member started later to hold the fleet's ring", func() bool {
		return late.stat(t, "tktkey_ring_digest") == digest
	})
	c := late.client()
	defer c.Close()
	if got, err := c.TicketKey(ctx, nil); err != nil || got != k {
		t.Errorf("the late member encrypts with another key (%v)", err)
	}
	out := ctlOut(t, late.Sock, "keys")
	if !strings.Contains(out, fmt.Sprintf("name=%x", k.Name)) || !strings.Contains(out, "source=fleet") {
		t.Errorf("tlsmgrctl keys:\n%s", out)
	}
	for _, secret := range [][]byte{k.AES[:], k.HMAC[:]} {
		if strings.Contains(out, hex.EncodeToString(secret)[:16]) {
			t.Fatal("tlsmgrctl keys shows key secrets")
		}
	}
}

// ctlOut runs tlsmgrctl against sock and returns its standard output.
func ctlOut(t *testing.T, sock string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tlsmgrctlBin, append([]string{"-s", sock, "-timeout", "5s"}, args...)...).Output()
	if err != nil {
		t.Fatalf("tlsmgrctl %v: %v", args, err)
	}
	return string(out)
}

// TestFleetSharedCaches: an entry updated through A is returned by B and
// C, a delete through C is seen by A, and Redis holds none of it in the
// clear.
func TestFleetSharedCaches(t *testing.T) {
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	members := startFleet(t, 3, "smtpd_tls_session_cache_database=redis:"+cf, "smtp_tls_session_cache_database=redis:"+cf)
	ctx := context.Background()
	a, b, c := members[0].client(), members[1].client(), members[2].client()
	defer a.Close()
	defer b.Close()
	defer c.Close()
	id := "smtp&mx.example.org&192.0.2.7&25&secret-destination"
	session := []byte("session bytes that are a secret")
	if err := a.Update(ctx, "smtp", id, session); err != nil {
		t.Fatal(err)
	}
	// An update is acknowledged once queued for Redis: the others see it
	// a pipeline later.
	for i, cl := range []*client.Client{b, c} {
		d := within(t, time.Second, fmt.Sprintf("member %d to see A's entry", i+1), func() bool {
			got, err := cl.Lookup(ctx, "smtp", id)
			return err == nil && string(got) == string(session)
		})
		t.Logf("member %d sees A's update %v after A's reply", i+1, d)
	}
	if _, err := b.Lookup(ctx, "smtpd", id); err == nil {
		t.Fatal("the smtp entry is visible in the smtpd cache")
	}
	if err := c.Delete(ctx, "smtp", id); err != nil {
		t.Fatal(err)
	}
	// B had a copy, which Redis tracks for it.
	for name, cl := range map[string]*client.Client{"A": a, "B": b} {
		d := within(t, time.Second, "a delete through C to be seen by "+name, func() bool {
			_, err := cl.Lookup(ctx, "smtp", id)
			return err != nil
		})
		t.Logf("%s sees C's delete %v after C's reply", name, d)
	}
	if err := a.Update(ctx, "smtp", id, session); err != nil {
		t.Fatal(err)
	}
	admin := srv.Client(t)
	within(t, time.Second, "A's update to reach Redis", func() bool { return admin.DBSize(ctx).Val() > 0 })
	for _, k := range admin.Keys(ctx, "*").Val() {
		v, _ := admin.Get(ctx, k).Bytes()
		for _, secret := range []string{id, "mx.example.org", "secret-destination", string(session), "session bytes"} {
			if strings.Contains(k, secret) || strings.Contains(string(v), secret) {
				t.Fatalf("Redis holds %q in the clear under %s", secret, k)
			}
		}
	}
	if st := members[1].stat(t, "smtp_cache_redis_state"); st != "up" {
		t.Errorf("smtp_cache_redis_state = %s", st)
	}
}

// TestFleetRedisOutage: Redis stopped with SIGSTOP under load. Every
// request to every member is answered within the timeout plus a margin,
// seeds and lookups keep working, and once Redis continues the members
// rejoin by themselves; a ticket key made during the outage is still
// accepted by the member that issued it.
func TestFleetRedisOutage(t *testing.T) {
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	members := startFleet(t, 2, "smtpd_tls_session_cache_database=redis:"+cf, "tlsmgr_ticket_key_database=redis:"+cf)
	ctx := context.Background()
	before := []byte("written before the outage")
	a := members[0].client()
	defer a.Close()
	if err := a.Update(ctx, "smtpd", "before", before); err != nil {
		t.Fatal(err)
	}
	key, err := a.TicketKey(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// "Before" means that A has seen Redis hold it: until then an outage
	// does not answer an update that landed (Redis's report of it cannot
	// be told from another member's change).
	members[0].waitStat(t, "smtpd_cache_redis_unproved", "0", 10*time.Second)
	srv.Pause()
	paused := true
	defer func() {
		if paused {
			srv.Resume()
		}
	}()
	// The timeout is 20ms; on a shared 2-core VM under -race the margin
	// is wider than the 5ms the design aims at, which the benchmark
	// measures.
	const bound = 20*time.Millisecond + 80*time.Millisecond
	late := testenv.WatchLateness(t) // a group the machine kept off a core says nothing of the daemon
	var worst time.Duration
	for _, m := range members {
		cl := m.client()
		for i := range 100 {
			start := time.Now()
			id := fmt.Sprintf("outage-%d", i)
			if err := cl.Update(ctx, "smtpd", id, []byte("during")); err != nil {
				t.Fatalf("update during the outage: %v", err)
			}
			if _, err := cl.Lookup(ctx, "smtpd", id); err != nil {
				t.Fatalf("lookup of an entry written during the outage: %v", err)
			}
			if _, err := cl.Seed(ctx, 32); err != nil {
				t.Fatalf("seed during the outage: %v", err)
			}
			if _, err := cl.TicketKey(ctx, nil); err != nil {
				t.Fatalf("tktkey during the outage: %v", err)
			}
			var bogus [16]byte
			rand.Read(bogus[:])
			cl.TicketKey(ctx, bogus[:]) // a miss, answered in time
			worst = max(worst, time.Since(start))
		}
		cl.Close()
	}
	t.Logf("slowest group of five requests during the outage: %v", worst)
	if limit := 5*bound + late.Late(); worst > limit {
		t.Errorf("five requests took %v with Redis stopped (limit %v)", worst, limit)
	}
	if got, err := a.Lookup(ctx, "smtpd", "before"); err != nil || string(got) != string(before) {
		t.Errorf("an entry written before the outage, from the local cache: %q, %v", got, err)
	}
	if got, err := a.TicketKey(ctx, key.Name[:]); err != nil || got != key {
		t.Errorf("the ring loaded before the outage: %v", err)
	}
	members[0].waitStat(t, "smtpd_cache_redis_state", "down", 10*time.Second)

	srv.Resume()
	paused = false
	// The breaker probes Redis with the traffic that comes: keep some.
	for _, m := range members {
		cl := m.client()
		deadline := time.Now().Add(30 * time.Second)
		for m.stats(t)["smtpd_cache_redis_state"] != "up" {
			if time.Now().After(deadline) {
				t.Fatalf("member still cut off from Redis 30 s after it came back")
			}
			cl.Lookup(ctx, "smtpd", "probe")
			time.Sleep(20 * time.Millisecond)
		}
		cl.Close()
	}
	b := members[1].client()
	defer b.Close()
	if err := b.Update(ctx, "smtpd", "after", []byte("shared again")); err != nil {
		t.Fatal(err)
	}
	// Written behind: A sees it a pipeline later.
	within(t, time.Second, "A to see B's update after the outage", func() bool {
		got, err := a.Lookup(ctx, "smtpd", "after")
		return err == nil && string(got) == "shared again"
	})
}

package integration

// What a member of a fleet answers when Redis, or its link to it, goes
// wrong: never a session the fleet deleted or replaced while the member
// saw it, never an older session than one it acknowledged; and liveness
// of its tracking that another client cannot fake.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// fleetSettingsTimeout is fleetSettings with the given Redis timeout, and
// the seal key file of another settings file (members of one fleet).
func fleetSettingsTimeout(t *testing.T, servers []string, timeout string, sealFrom string) string {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "seal.key")
	if sealFrom == "" {
		key := make([]byte, 32)
		rand.Read(key)
		if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		keyFile = filepath.Join(filepath.Dir(sealFrom), "seal.key")
	}
	text := fmt.Sprintf("servers = %s\nseal_key_file = %s\ntimeout = %s\n", strings.Join(servers, ", "), keyFile, timeout)
	path := filepath.Join(dir, "tlsmgr-redis.cf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// lookupStr returns what a member answers for id in the smtpd cache, ""
// for a miss.
func lookupStr(t *testing.T, c *client.Client, id string) string {
	t.Helper()
	got, err := c.Lookup(context.Background(), "smtpd", id)
	if isNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("lookup %s: %v", id, err)
	}
	return string(got)
}

// TestFleetOwnWritesReadBack: with a Redis timeout of 10ms, a member
// whose updates Redis holds back (CLIENT PAUSE WRITE) or refuses (OOM)
// reads its own updates back, says in its log that the fleet did not get
// them, and takes another member's later update once Redis is back.
// Before, the update read back as the session Redis still had, or as a
// miss, with updates_unshared counted and nothing logged.
func TestFleetOwnWritesReadBack(t *testing.T) {
	srv := redistest.Single(t)
	admin := srv.Client(t)
	cf := fleetSettingsTimeout(t, []string{srv.Addr}, "10ms", "")
	a := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf)
	pa := a.start(t)
	b := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf)
	b.start(t)
	members := []*standalone{a, b}
	ca, cb := a.client(), b.client()
	defer ca.Close()
	defer cb.Close()
	ctx := context.Background()
	for _, m := range members {
		m.waitStat(t, "smtpd_cache_redis_tracking", "on", 10*time.Second)
	}
	faults := []struct {
		name       string
		start, end func()
	}{
		{"client pause write", func() {
			if err := admin.Do(ctx, "CLIENT", "PAUSE", 60000, "WRITE").Err(); err != nil {
				t.Fatal(err)
			}
		}, func() { admin.Do(ctx, "CLIENT", "UNPAUSE") }},
		{"oom", func() {
			if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
				t.Fatal(err)
			}
		}, func() { admin.ConfigSet(ctx, "maxmemory", "0") }},
	}
	for i, f := range faults {
		id := fmt.Sprintf("own-%d", i)
		if err := ca.Update(ctx, "smtpd", id, []byte("older")); err != nil {
			t.Fatal(err)
		}
		within(t, 5*time.Second, "the first update to reach Redis", func() bool { return lookupStr(t, cb, id) == "older" })
		unshared := statInt(t, a.stats(t), "smtpd_cache_updates_unshared")
		f.start()
		if err := ca.Update(ctx, "smtpd", id, []byte("newer")); err != nil {
			f.end()
			t.Fatal(err)
		}
		// Long past the update's 10ms: its write has been answered or
		// given up.
		time.Sleep(300 * time.Millisecond)
		for range 20 {
			if got := lookupStr(t, ca, id); got != "newer" {
				f.end()
				t.Fatalf("%s: a reads back %q after its update to %q", f.name, got, "newer")
			}
		}
		if n := statInt(t, a.stats(t), "smtpd_cache_updates_unshared"); n != unshared+1 {
			t.Errorf("%s: updates_unshared %d, want %d", f.name, n, unshared+1)
		}
		f.end()
		for range 20 {
			if got := lookupStr(t, ca, id); got != "newer" {
				t.Fatalf("%s over: a reads back %q after its update to %q", f.name, got, "newer")
			}
		}
		// Another member's update after that is the newer one.
		if err := cb.Update(ctx, "smtpd", id, []byte("fleet")); err != nil {
			t.Fatal(err)
		}
		within(t, 5*time.Second, "a to take b's later update", func() bool {
			got := lookupStr(t, ca, id)
			if got != "newer" && got != "fleet" {
				t.Fatalf("%s: a answers %q", f.name, got)
			}
			return got == "fleet"
		})
	}
	if log := pa.Stderr.String(); !strings.Contains(log, "an update not shared with the fleet") || !strings.Contains(log, "Redis refuses updates: OOM") {
		t.Errorf("a's log does not report the unshared updates:\n%s", log)
	}
}

// TestFleetBlackHoledMemberServesNothingStale: member A's link to Redis is
// black-holed after it saw B delete one session and replace another; for
// seconds of outage A serves what nobody changed and never the deleted or
// replaced sessions. Then a client that publishes on __redis__:invalidate
// cannot keep A's tracking looking alive while A's tracking connection is
// gone. Before, A served the deleted session in every lookup of the
// outage, and the published stream kept a dead tracker "on".
func TestFleetBlackHoledMemberServesNothingStale(t *testing.T) {
	srv := redistest.Single(t)
	px := redistest.NewProxy(t, srv.Addr)
	cfB := fleetSettingsTimeout(t, []string{srv.Addr}, "20ms", "")
	cfA := fleetSettingsTimeout(t, []string{px.Addr}, "20ms", cfB)
	a := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cfA)
	a.start(t)
	b := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cfB)
	b.start(t)
	ca, cb := a.client(), b.client()
	defer ca.Close()
	defer cb.Close()
	ctx := context.Background()
	a.waitStat(t, "smtpd_cache_redis_tracking", "on", 10*time.Second)
	b.waitStat(t, "smtpd_cache_redis_tracking", "on", 10*time.Second)

	ids := []string{"kept", "deleted", "replaced", "marker"}
	for _, id := range ids {
		if err := cb.Update(ctx, "smtpd", id, []byte(id+" v1")); err != nil {
			t.Fatal(err)
		}
	}
	// A reads each until it answers from a copy it trusts.
	for _, id := range ids {
		within(t, 5*time.Second, "A to read "+id, func() bool { return lookupStr(t, ca, id) == id+" v1" })
	}
	local := statInt(t, a.stats(t), "smtpd_cache_redis_local_hits")
	within(t, 5*time.Second, "A to answer from its copies", func() bool {
		for _, id := range ids {
			lookupStr(t, ca, id)
		}
		return statInt(t, a.stats(t), "smtpd_cache_redis_local_hits") >= local+int64(len(ids))
	})
	if err := cb.Delete(ctx, "smtpd", "deleted"); err != nil {
		t.Fatal(err)
	}
	if err := cb.Update(ctx, "smtpd", "replaced", []byte("replaced v2")); err != nil {
		t.Fatal(err)
	}
	if err := cb.Update(ctx, "smtpd", "marker", []byte("marker v2")); err != nil {
		t.Fatal(err)
	}
	// A answers the marker's change from Redis only once its copy's
	// invalidation arrived, after the others'.
	within(t, 5*time.Second, "A to see B's changes", func() bool { return lookupStr(t, ca, "marker") == "marker v2" })

	px.BlackHole()
	restored := false
	defer func() {
		if !restored {
			px.Restore()
		}
	}()
	start := time.Now()
	n := 0
	for time.Since(start) < 4*time.Second {
		for id, want := range map[string]string{"kept": "kept v1", "deleted": "", "replaced": ""} {
			if got := lookupStr(t, ca, id); got != want {
				t.Fatalf("%v into the black hole, A answers %q for %s, want %q", time.Since(start).Round(time.Millisecond), got, id, want)
			}
			n++
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := a.stats(t)
	t.Logf("%d lookups in 4 s of black hole; A: state %s, tracking %s, fallback hits %s", n, st["smtpd_cache_redis_state"], st["smtpd_cache_redis_tracking"], st["smtpd_cache_fallback_hits"])
	if st["smtpd_cache_redis_tracking"] != "off" || statInt(t, st, "smtpd_cache_fallback_hits") == 0 {
		t.Errorf("A's tracking %s, fallback hits %s: the outage was not served from the copies", st["smtpd_cache_redis_tracking"], st["smtpd_cache_fallback_hits"])
	}
	px.Restore()
	restored = true
	within(t, 30*time.Second, "A back on Redis", func() bool {
		lookupStr(t, ca, "probe")
		return a.stats(t)["smtpd_cache_redis_state"] == "up"
	})
	a.waitStat(t, "smtpd_cache_redis_tracking", "on", 10*time.Second)
	within(t, 5*time.Second, "A to see the replacement", func() bool { return lookupStr(t, ca, "replaced") == "replaced v2" })

	// Someone publishes on __redis__:invalidate without a pause.
	srv.ForgeInvalidations(t, "tlsmgr:c:smtpd:someone-elses-key")
	within(t, 5*time.Second, "A to answer kept from its copy", func() bool {
		local := statInt(t, a.stats(t), "smtpd_cache_redis_local_hits")
		lookupStr(t, ca, "kept")
		return statInt(t, a.stats(t), "smtpd_cache_redis_local_hits") > local
	})
	// A's tracking connection goes, quietly: Redis stops telling A.
	killed := srv.KillClients(t, "t")
	if killed == 0 {
		t.Fatal("no tracking connection to kill")
	}
	if err := cb.Delete(ctx, "smtpd", "kept"); err != nil {
		t.Fatal(err)
	}
	d := within(t, 5*time.Second, "A to stop serving the deleted session", func() bool { return lookupStr(t, ca, "kept") == "" })
	t.Logf("with a stream of published invalidations, A stops serving a deleted session %v after the delete", d)
	if d > 2*time.Second {
		t.Errorf("A served the deleted session for %v", d)
	}
	a.waitStat(t, "smtpd_cache_redis_tracking", "on", 10*time.Second)
}

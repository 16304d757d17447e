package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// sessionFor returns the session bytes the tests store under id: sha256(id)
// repeated to the length that the id ends with ("...-len1234"), so that
// any bytes read back can be checked against the id alone.
func sessionFor(id string) []byte {
	_, length, ok := strings.Cut(id, "-len")
	n, err := strconv.Atoi(length)
	if !ok || err != nil {
		panic("bad test id " + id)
	}
	sum := sha256.Sum256([]byte(id))
	return bytes.Repeat(sum[:], n/len(sum)+1)[:n]
}

func sessionID(prefix string, n int, rng *rand.Rand) string {
	return fmt.Sprintf("%s-%06d-len%d", prefix, n, 100+rng.IntN(1901))
}

// lookupAll looks up ids over conns connections. Every hit must hold the
// derived bytes; it returns the ids that missed.
func lookupAll(t *testing.T, s *standalone, ids []string) (missed []string) {
	t.Helper()
	const conns = 4
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failure error
	for i := range conns {
		wg.Go(func() {
			c := s.client()
			defer c.Close()
			for n := i; n < len(ids); n += conns {
				b, err := c.Lookup(context.Background(), "smtpd", ids[n])
				mu.Lock()
				switch {
				case isNotFound(err):
					missed = append(missed, ids[n])
				case err != nil:
					failure = fmt.Errorf("lookup %s: %w", ids[n], err)
				case !bytes.Equal(b, sessionFor(ids[n])):
					failure = fmt.Errorf("lookup %s: %d bytes that are not what was stored", ids[n], len(b))
				}
				mu.Unlock()
				if failure != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	return missed
}

func updateAll(t *testing.T, s *standalone, ids []string) {
	t.Helper()
	c := s.client()
	defer c.Close()
	for _, id := range ids {
		if err := c.Update(context.Background(), "smtpd", id, sessionFor(id)); err != nil {
			t.Fatalf("update %s: %v", id, err)
		}
	}
}

func TestPersistentCacheRestart(t *testing.T) {
	s := newStandalone(t, "smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache")
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []string
	for n := range 200 {
		ids = append(ids, sessionID("restart", n, rng))
	}

	late := testenv.WatchLateness(t)
	p := s.start(t)
	updateAll(t, s, ids[:100])
	p.Stop(t)
	p.NoWarnings(t)
	s.checkStateFile(t, filepath.Join(s.Data, "smtpd_scache"))

	// A clean restart keeps everything.
	p = s.start(t)
	if missed := lookupAll(t, s, ids[:100]); len(missed) != 0 {
		t.Fatalf("after a clean restart %d of 100 entries are gone, e.g. %s", len(missed), missed[0])
	}
	updateAll(t, s, ids[100:])
	time.Sleep(commitGrace + late.Late())
	p.Kill()
	p.NoWarnings(t)

	// So does kill -9: every update acknowledged more than commitGrace
	// before it is there.
	p = s.start(t)
	if missed := lookupAll(t, s, ids); len(missed) != 0 {
		t.Fatalf("after kill -9 %d of %d entries are gone, e.g. %s", len(missed), len(ids), missed[0])
	}
	if got := statInt(t, s.stats(t), "smtpd_cache_entries"); got != int64(len(ids)) {
		t.Errorf("smtpd_cache_entries = %d, want %d", got, len(ids))
	}
	p.Stop(t)
	p.NoWarnings(t)
	s.checkStateFile(t, filepath.Join(s.Data, "smtpd_scache"))
	noCorruptFiles(t, s)
}

func noCorruptFiles(t *testing.T, s *standalone) {
	t.Helper()
	ents, _ := os.ReadDir(s.Data)
	for _, e := range ents {
		if strings.Contains(e.Name(), "corrupt") {
			t.Errorf("the cache was moved aside: %s", e.Name())
		}
	}
}

// TestPersistentCacheCrashLoop kills the daemon with SIGKILL in the middle
// of update storms, again and again. Every start must succeed and keep
// the file; every acknowledged update must be found; an update in flight
// at the kill may be found or not, but nothing found may differ from what
// was stored.
// commitGrace bounds how long an acknowledged update may wait in the
// file store's write-behind queue (boltstore): updates acknowledged longer
// than this before a SIGKILL must survive it; younger ones may be lost,
// which a cache may do. What is returned must always be what was written.
// The tests add the worst lateness of their own wake-ups: a committer the
// loaded machine kept off a core says nothing of the store.
const commitGrace = 150 * time.Millisecond

// testSeed returns the seed for a test's random choices: TLSMGR_TEST_SEED
// if set, to replay a failure, else one from the clock. It logs the seed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("TLSMGR_TEST_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TLSMGR_TEST_SEED=%q: %v", v, err)
		}
		t.Logf("random seed %d (from TLSMGR_TEST_SEED)", seed)
		return seed
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d (replay with TLSMGR_TEST_SEED=%d)", seed, seed)
	return seed
}

func TestPersistentCacheCrashLoop(t *testing.T) {
	s := newStandalone(t, "smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache",
		"smtpd_tls_session_cache_max_entries=1000000", "smtpd_tls_session_cache_max_bytes=1g")
	const (
		iterations = 10
		writers    = 4
	)
	type ack struct {
		id string
		at time.Time
	}
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	var durable []string // over all iterations
	var prevDurable []string
	var prevRecent []ack
	var prevKilled time.Time
	stored, recent, recentFound := 0, 0, 0
	// The oldest acknowledged update lost, by how long before the kill
	// it was acknowledged: what a SIGKILL costs (docs/design.md, Cache files).
	var worstLoss time.Duration
	lostAcked := 0
	late := testenv.WatchLateness(t)
	for iter := range iterations + 1 {
		p := s.start(t)
		// What the previous storm was told is stored, long enough before
		// the kill, must be there; lookupAll also checks every hit's bytes.
		if missed := lookupAll(t, s, prevDurable); len(missed) != 0 {
			t.Fatalf("iteration %d: %d of %d updates acknowledged over %v before the kill were lost, e.g. %s",
				iter, len(missed), len(prevDurable), commitGrace, missed[0])
		}
		ids := make([]string, len(prevRecent))
		ackedAt := map[string]time.Time{}
		for i, a := range prevRecent {
			ids[i] = a.id
			ackedAt[a.id] = a.at
		}
		missed := lookupAll(t, s, ids)
		recentFound += len(prevRecent) - len(missed)
		for _, id := range missed {
			if at := ackedAt[id]; !at.IsZero() {
				lostAcked++
				worstLoss = max(worstLoss, prevKilled.Sub(at))
			}
		}
		if iter == iterations {
			if missed := lookupAll(t, s, durable); len(missed) != 0 {
				t.Fatalf("%d of %d durable updates lost over the crash loop, e.g. %s", len(missed), len(durable), missed[0])
			}
			if got := statInt(t, s.stats(t), "smtpd_cache_entries"); got < int64(len(durable)) {
				t.Errorf("smtpd_cache_entries = %d, want at least %d", got, len(durable))
			}
			p.Stop(t)
			p.NoWarnings(t)
			break
		}

		// The storm, and a SIGKILL at a random moment in it.
		killAt := commitGrace + time.Duration(200+rng.IntN(301))*time.Millisecond
		seeds := make([]uint64, writers)
		for g := range seeds {
			seeds[g] = rng.Uint64()
		}
		ackedBy := make([][]ack, writers)
		inFlight := make([]string, writers)
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				c := s.client()
				defer c.Close()
				r := rand.New(rand.NewPCG(seeds[g], 4))
				for n := 0; ; n++ {
					id := sessionID(fmt.Sprintf("it%02d-w%d", iter, g), n, r)
					if err := c.Update(context.Background(), "smtpd", id, sessionFor(id)); err != nil {
						inFlight[g] = id
						return
					}
					ackedBy[g] = append(ackedBy[g], ack{id, time.Now()})
				}
			})
		}
		time.Sleep(killAt)
		killed := time.Now()
		p.Kill()
		wg.Wait()
		prevDurable, prevRecent, prevKilled = nil, nil, killed
		for g := range writers {
			for _, a := range ackedBy[g] {
				if a.at.Before(killed.Add(-commitGrace - late.Late())) {
					prevDurable = append(prevDurable, a.id)
				} else {
					prevRecent = append(prevRecent, a)
				}
			}
			prevRecent = append(prevRecent, ack{id: inFlight[g]}) // never acknowledged
		}
		durable = append(durable, prevDurable...)
		stored += len(prevDurable)
		recent += len(prevRecent)
		t.Logf("iteration %d: killed after %v, %d updates acknowledged before the grace period, %d after it or in flight",
			iter, killAt, len(prevDurable), len(prevRecent))
		p.NoWarnings(t)
	}
	t.Logf("%d kills: %d durable updates all found; %d of %d recent or in-flight updates found; "+
		"%d acknowledged updates lost, the oldest acknowledged %v before its kill",
		iterations, stored, recentFound, recent, lostAcked, worstLoss.Round(10*time.Microsecond))
	noCorruptFiles(t, s)
	s.checkStateFile(t, filepath.Join(s.Data, "smtpd_scache"))
}

// TestTicketKeyPersistence: with tlsmgr_ticket_key_persistence=yes the
// current session ticket key survives restarts, kill -9 included; with
// "no" every start has a new key, and a key file left by "yes" is removed.
func TestTicketKeyPersistence(t *testing.T) {
	s := newStandalone(t)
	keyFile := filepath.Join(s.Data, "tlsmgr_ticket_keys")
	currentKey := func() [16]byte {
		t.Helper()
		c := s.client()
		defer c.Close()
		k, err := c.TicketKey(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return k.Name
	}

	p := s.start(t, "tlsmgr_ticket_key_persistence=yes")
	first := currentKey()
	p.Stop(t)
	s.checkStateFile(t, keyFile)

	p = s.start(t, "tlsmgr_ticket_key_persistence=yes")
	if got := currentKey(); got != first {
		t.Errorf("after a restart the current key is %x, want %x", got, first)
	}
	p.Kill()
	p = s.start(t, "tlsmgr_ticket_key_persistence=yes")
	if got := currentKey(); got != first {
		t.Errorf("after kill -9 the current key is %x, want %x", got, first)
	}
	// The key still decrypts tickets by name.
	c := s.client()
	if k, err := c.TicketKey(context.Background(), first[:]); err != nil || k.Name != first {
		t.Errorf("tktkey by name after restarts: %v", err)
	}
	c.Close()
	p.Stop(t)
	p.NoWarnings(t)
	s.checkStateFile(t, keyFile)

	p = s.start(t, "tlsmgr_ticket_key_persistence=no")
	second := currentKey()
	if second == first {
		t.Error("with persistence off the key survived a restart")
	}
	p.Stop(t)
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("with persistence off the key file is still there (%v)", err)
	}
	p = s.start(t, "tlsmgr_ticket_key_persistence=no")
	if got := currentKey(); got == second || got == first {
		t.Errorf("with persistence off a restart kept key %x", got)
	}
	p.Stop(t)
	p.NoWarnings(t)
}

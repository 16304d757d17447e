package integration

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestCacheBounds: the cache size limits hold at daemon level, for the
// memory store and the file store: the oldest entries make room.
func TestCacheBounds(t *testing.T) {
	for _, db := range []string{"memory:smtpd", "btree:$DATA/smtpd_scache"} {
		typ, _, _ := strings.Cut(db, ":")
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			t.Run("max_entries", func(t *testing.T) {
				s := newStandalone(t, "smtpd_tls_session_cache_database="+db, "smtpd_tls_session_cache_max_entries=100")
				p := s.start(t)
				rng := rand.New(rand.NewPCG(5, 6))
				var ids []string
				for n := range 1000 {
					ids = append(ids, sessionID("bound", n, rng))
				}
				updateAll(t, s, ids)
				st := s.stats(t)
				if got := statInt(t, st, "smtpd_cache_updates"); got != 1000 {
					t.Errorf("smtpd_cache_updates = %d, want 1000", got)
				}
				if got := statInt(t, st, "smtpd_cache_entries"); got > 100 || got < 1 {
					t.Errorf("smtpd_cache_entries = %d, want 1..100", got)
				}
				if got := statInt(t, st, "smtpd_cache_evictions"); got < 900 {
					t.Errorf("smtpd_cache_evictions = %d, want at least 900", got)
				}
				// The newest entries stay, with their contents; the
				// oldest went.
				missed := lookupAll(t, s, ids)
				if hits := len(ids) - len(missed); hits > 100 || hits < 1 {
					t.Errorf("%d of 1000 entries found, want 1..100", hits)
				}
				if got := lookupAll(t, s, ids[len(ids)-1:]); len(got) != 0 {
					t.Error("the newest entry was evicted")
				}
				if got := lookupAll(t, s, ids[:1]); len(got) != 1 {
					t.Error("the oldest entry was kept")
				}
				p.Stop(t)
				p.NoWarnings(t)
			})
			t.Run("max_bytes", func(t *testing.T) {
				const maxBytes = 64 << 10
				s := newStandalone(t, "smtpd_tls_session_cache_database="+db,
					fmt.Sprintf("smtpd_tls_session_cache_max_bytes=%d", maxBytes))
				p := s.start(t)
				rng := rand.New(rand.NewPCG(7, 8))
				var ids []string
				total := 0
				for n := 0; total < 10*maxBytes; n++ {
					ids = append(ids, sessionID("bytes", n, rng))
					total += len(sessionFor(ids[n]))
				}
				updateAll(t, s, ids)
				st := s.stats(t)
				if got := statInt(t, st, "smtpd_cache_bytes"); got > maxBytes || got < 1 {
					t.Errorf("smtpd_cache_bytes = %d, want 1..%d", got, maxBytes)
				}
				if got := statInt(t, st, "smtpd_cache_evictions"); got < int64(len(ids))*8/10 {
					t.Errorf("smtpd_cache_evictions = %d after %d updates of %d bytes in all", got, len(ids), total)
				}
				if got := lookupAll(t, s, ids[len(ids)-1:]); len(got) != 0 {
					t.Error("the newest entry was evicted")
				}
				p.Stop(t)
				p.NoWarnings(t)
			})
		})
	}
}

// TestCacheBoundsSurviveRestart: a bounded file cache reopened holds what
// it held, within the bound, and goes on evicting the oldest.
func TestCacheBoundsSurviveRestart(t *testing.T) {
	s := newStandalone(t, "smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache", "smtpd_tls_session_cache_max_entries=100")
	rng := rand.New(rand.NewPCG(9, 10))
	var ids []string
	for n := range 300 {
		ids = append(ids, sessionID("reopen", n, rng))
	}
	p := s.start(t)
	updateAll(t, s, ids[:200])
	p.Stop(t)
	p = s.start(t)
	if got := statInt(t, s.stats(t), "smtpd_cache_entries"); got != 100 {
		t.Errorf("after a restart smtpd_cache_entries = %d, want 100", got)
	}
	if missed := lookupAll(t, s, ids[100:200]); len(missed) != 0 {
		t.Errorf("%d of the newest 100 entries lost in a restart", len(missed))
	}
	updateAll(t, s, ids[200:])
	if got := statInt(t, s.stats(t), "smtpd_cache_entries"); got != 100 {
		t.Errorf("smtpd_cache_entries = %d, want 100", got)
	}
	if missed := lookupAll(t, s, ids[200:]); len(missed) != 0 {
		t.Errorf("%d of the newest 100 entries missing", len(missed))
	}
	if missed := lookupAll(t, s, ids[:200]); len(missed) != 200 {
		t.Errorf("%d of the 200 older entries still there after 100 more updates", 200-len(missed))
	}
	p.Stop(t)
	p.NoWarnings(t)
}

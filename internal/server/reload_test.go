package server

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
)

// What a reload of main.cf changes in a running server: the timeouts
// policy reports (and the caches use), and the client limit.

func TestSetCacheTimeout(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "update", "cache_type", "smtpd", "cache_id", "a", "session", b64("A")).expect(ok)
	f.clock.Advance(700 * time.Second)
	if !f.srv.SetCacheTimeout("smtpd", 600*time.Second) || !f.srv.SetCacheTimeout("lmtp", 900*time.Second) {
		t.Fatal("SetCacheTimeout refused a cache type")
	}
	if f.srv.SetCacheTimeout("nope", time.Minute) || f.srv.SetCacheTimeout("smtp", -time.Second) {
		t.Error("SetCacheTimeout took a bogus type or a negative timeout")
	}
	c.send("request", "policy", "cache_type", "smtpd").expect(ok + " cachable=1 timeout=600")
	c.send("request", "policy", "cache_type", "lmtp").expect(ok + " cachable=0 timeout=900")
	c.send("request", "policy", "cache_type", "smtp").expect(ok + " cachable=1 timeout=3600")
	// The cache itself follows: written 700 s ago is past 600 s.
	if got := f.srv.cfg.Caches[0].Cache.Timeout(); got != 600*time.Second {
		t.Errorf("smtpd cache timeout %v", got)
	}
	c.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a").expect(err1 + " session=")
	if got := f.stat("smtpd_cache_timeout"); got != "600" {
		t.Errorf("smtpd_cache_timeout = %s", got)
	}
}

// TestCacheTimeoutHeldOnce: a cache type's timeout lives in one place,
// which SetCacheTimeout changes: a copy of the CacheType made before the
// server (as the daemon keeps one) sees the new timeout, policy reports
// it, and an enabled type's is its cache's own.
func TestCacheTimeoutHeldOnce(t *testing.T) {
	cache := scache.New(scache.Config{Name: "smtpd", Database: "memory:", Timeout: time.Hour}, memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}))
	defer cache.Close()
	mine := []CacheType{EnabledCache(cache), DisabledCache("smtp", 2*time.Hour), {Name: "lmtp"}}
	s := New(Config{Caches: mine})
	if mine[0].Name != "smtpd" || mine[0].Timeout() != time.Hour || mine[1].Timeout() != 2*time.Hour || mine[2].Timeout() != 0 {
		t.Fatalf("timeouts at the start: %v %v %v", mine[0].Timeout(), mine[1].Timeout(), mine[2].Timeout())
	}
	for name, d := range map[string]time.Duration{"smtpd": 600 * time.Second, "smtp": 900 * time.Second, "lmtp": 300 * time.Second} {
		if !s.SetCacheTimeout(name, d) {
			t.Fatalf("SetCacheTimeout(%s) refused", name)
		}
	}
	if got := mine[0].Timeout(); got != 600*time.Second || cache.Timeout() != got {
		t.Errorf("smtpd: the copy says %v, the cache %v; want 10m0s", got, cache.Timeout())
	}
	if got := mine[1].Timeout(); got != 900*time.Second {
		t.Errorf("smtp (disabled): the copy says %v, want 15m0s", got)
	}
	for i, want := range []time.Duration{600 * time.Second, 900 * time.Second, 300 * time.Second} {
		if got := s.cfg.Caches[i].Timeout(); got != want {
			t.Errorf("%s: the server says %v, want %v", s.cfg.Caches[i].Name, got, want)
		}
	}
	// 0 turns a cache off, which a running server cannot do.
	if s.SetCacheTimeout("smtpd", 0) || mine[0].Timeout() != 600*time.Second {
		t.Errorf("SetCacheTimeout(smtpd, 0) taken: %v", mine[0].Timeout())
	}
}

// TestSetMaxClients: a lower limit closes the idle connections over it at
// once, longest idle first, counted as evicted, and holds for newcomers; a
// higher one takes more clients without evicting.
func TestSetMaxClients(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.MaxClients = 5 })
	var rs []*raw
	for range 5 {
		r := f.dial(t)
		rs = append(rs, r)
		// In order of their last request: rs[0] has been idle longest.
		r.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	}
	f.waitTable(t, 5, 0)
	if n := f.srv.SetMaxClients(2); n != 3 {
		t.Errorf("SetMaxClients(2) closed %d, want 3", n)
	}
	if f.srv.maxClientLimit() != 2 {
		t.Errorf("MaxClients() = %d", f.srv.maxClientLimit())
	}
	for _, r := range rs[:3] {
		r.expectEOF()
	}
	for _, r := range rs[3:] {
		r.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	}
	f.waitTable(t, 2, 0)
	// A newcomer to the full table makes room as before.
	d := f.dial(t)
	rs[3].expectEOF()
	d.send("request", "stats")
	got := d.readList() + " "
	for _, want := range []string{" clients=2 ", " connections_evicted=4 "} {
		if !strings.Contains(got, want) {
			t.Errorf("stats lack %q: %s", want, got)
		}
	}
	// Raised: room for more, nobody evicted.
	if n := f.srv.SetMaxClients(4); n != 0 {
		t.Errorf("SetMaxClients(4) closed %d", n)
	}
	e, g := f.dial(t), f.dial(t)
	e.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	g.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	rs[4].send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	if got := f.stat("connections_evicted"); got != "4" {
		t.Errorf("connections_evicted = %s, want 4", got)
	}
	if n := f.srv.SetMaxClients(0); n != 0 || f.srv.maxClientLimit() != 4 {
		t.Errorf("SetMaxClients(0): closed %d, limit %d", n, f.srv.maxClientLimit())
	}
}

// TestSetMaxClientsBusyConnectionsStay: a connection in the middle of a
// request is not closed by a lower limit; it is answered.
func TestSetMaxClientsBusyConnectionsStay(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = 3
		c.RequestTimeout = time.Minute
	})
	a, b := f.dial(t), f.dial(t)
	a.nc.Write([]byte(policyReq[:9]))
	b.send("request", "policy", "cache_type", "smtpd").expect(policyOK)
	f.waitTable(t, 1, 1)
	if n := f.srv.SetMaxClients(1); n != 1 {
		t.Errorf("closed %d, want the idle one", n)
	}
	b.expectEOF()
	a.nc.Write([]byte(policyReq[9:]))
	a.expect(policyOK)
}

// TestReloadSettersWhileServing runs the setters against live traffic
// (for the race detector).
func TestReloadSettersWhileServing(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.MaxClients = 50 })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		c := f.dial(t)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.send("request", "update", "cache_type", "smtpd", "cache_id", "x", "session", b64("X")).expect(ok)
				c.send("request", "policy", "cache_type", "smtpd").readList()
			}
		})
	}
	for i := range 50 {
		f.srv.SetCacheTimeout("smtpd", time.Duration(120+i)*time.Second)
		f.srv.SetMaxClients(10 + i)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

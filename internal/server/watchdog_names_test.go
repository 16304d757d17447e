package server

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// TestWatchdogNamesEveryRequestAndCache: the watchdog's description of a
// request names its type and its cache, for every request type and every
// cache, the last one included; a request not yet dispatched, or whose
// cache is not chosen yet, is named as far as it is known.
func TestWatchdogNamesEveryRequestAndCache(t *testing.T) {
	s := New(Config{Caches: []CacheType{{Name: "smtpd"}, {Name: "smtp"}, {Name: "lmtp"}}})
	c := &conn{srv: s, now: time.Now()}
	describe := func() string {
		started, what := s.oldestRequest()
		if started.IsZero() || what == nil {
			return "(nothing found)"
		}
		return what()
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.peer = "conn 1"
	ops := []string{proto.RequestSeed, proto.RequestPolicy, proto.RequestLookup, proto.RequestUpdate,
		proto.RequestDelete, proto.RequestTktKey, proto.RequestStats, proto.RequestDump, proto.RequestFlush}
	for _, op := range ops {
		c.arrived()
		if got := describe(); got != "request from conn 1" {
			t.Errorf("before dispatch: %q", got)
		}
		c.dispatched(op)
		if got, want := describe(), op+" request from conn 1"; got != want {
			t.Errorf("dispatched: %q, want %q", got, want)
		}
		for i, ct := range s.cfg.Caches {
			c.cacheChosen(i)
			if got, want := describe(), op+" request for the "+ct.Name+" cache from conn 1"; got != want {
				t.Errorf("cache chosen: %q, want %q", got, want)
			}
		}
		c.replying()
		if got := describe(); got != "(nothing found)" {
			t.Errorf("replying: %q, want nothing in progress", got)
		}
	}
	c.arrived()
	c.dispatched("frobnicate")
	if got := describe(); got != "request from conn 1" {
		t.Errorf("unknown request: %q", got)
	}
}

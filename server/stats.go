package server

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/attr"
	"github.com/gotlsmgr/tlsmgr/proto"
)

type counters struct {
	accepted, rejected, evicted, malformed, timedOut   atomic.Uint64
	seed, policy, lookup, update, delete, tktkey, stat atomic.Uint64
	seedBytes                                          atomic.Uint64
}

// StatsFunc adds name/value pairs to a stats reply; the daemon uses it for
// parts the server does not own (the PRNG, the process).
type StatsFunc func(add func(name, value string))

// Stats returns the daemon's counters as ordered name/value pairs: the
// same pairs a "stats" request returns.
func (s *Server) Stats(ctx context.Context) [][2]string {
	var out [][2]string
	add := func(name, value string) { out = append(out, [2]string{name, value}) }
	u := func(name string, v *atomic.Uint64) { add(name, strconv.FormatUint(v.Load(), 10)) }
	add("clients", strconv.Itoa(s.Clients()))
	u("connections_accepted", &s.counters.accepted)
	u("connections_rejected", &s.counters.rejected)
	u("connections_evicted", &s.counters.evicted)
	u("requests_malformed", &s.counters.malformed)
	u("requests_timed_out", &s.counters.timedOut)
	u("requests_seed", &s.counters.seed)
	u("requests_policy", &s.counters.policy)
	u("requests_lookup", &s.counters.lookup)
	u("requests_update", &s.counters.update)
	u("requests_delete", &s.counters.delete)
	u("requests_tktkey", &s.counters.tktkey)
	u("requests_stats", &s.counters.stat)
	u("seed_bytes", &s.counters.seedBytes)
	for _, ct := range s.cfg.Caches {
		p := ct.Name + "_cache_"
		if ct.Cache == nil {
			add(p+"enabled", "0")
			continue
		}
		add(p+"enabled", "1")
		st, err := ct.Cache.Stats(ctx)
		add(p+"timeout", strconv.Itoa(int(ct.Timeout/time.Second)))
		add(p+"hits", strconv.FormatUint(st.Hits, 10))
		add(p+"misses", strconv.FormatUint(st.Misses, 10))
		add(p+"expired", strconv.FormatUint(st.Expired, 10))
		add(p+"updates", strconv.FormatUint(st.Updates, 10))
		add(p+"refused", strconv.FormatUint(st.Refused, 10))
		add(p+"deletes", strconv.FormatUint(st.Deletes, 10))
		add(p+"swept", strconv.FormatUint(st.Swept, 10))
		add(p+"store_errors", strconv.FormatUint(st.StoreErrors, 10))
		if err != nil {
			add(p+"store", "error: "+err.Error())
			continue
		}
		add(p+"entries", strconv.Itoa(st.Store.Entries))
		add(p+"bytes", strconv.FormatInt(st.Store.Bytes, 10))
		add(p+"evictions", strconv.FormatUint(st.Store.Evictions, 10))
		// What became of acknowledged updates and deletes (file stores).
		failing := "0"
		if st.Store.Failing {
			failing = "1"
		}
		add(p+"store_failing", failing)
		add(p+"writes_pending", strconv.Itoa(st.Store.Pending))
		add(p+"writes_refused", strconv.FormatUint(st.Store.Refused, 10))
		add(p+"writes_lost", strconv.FormatUint(st.Store.Lost, 10))
	}
	if s.cfg.Stats != nil {
		s.cfg.Stats(add)
	}
	return out
}

// stats answers our "stats" request (not part of Postfix's protocol): the
// status, then one string attribute per counter.
func (c *conn) stats(args attr.List) bool {
	c.srv.counters.stat.Add(1)
	if _, ok := c.args(proto.RequestStats, args); !ok {
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	ctx, cancel := c.storeContext()
	pairs := c.srv.Stats(ctx)
	cancel()
	return c.reply(func() {
		c.w.Int(attrStatus, StatusOK)
		for _, p := range pairs {
			c.w.Str(p[0], p[1])
		}
	})
}

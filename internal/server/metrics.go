package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// requestStats counts one request type and times its answers.
type requestStats struct {
	count   atomic.Uint64
	latency *metrics.Histogram
}

// done times a request that began at start.
func (r *requestStats) done(start time.Time) { r.latency.Observe(time.Since(start)) }

// requestNames are the request types counted, in stats order.
var requestNames = []string{
	proto.RequestSeed, proto.RequestPolicy, proto.RequestLookup, proto.RequestUpdate,
	proto.RequestDelete, proto.RequestTktKey, proto.RequestStats,
	proto.RequestDump, proto.RequestFlush,
}

func newRequestStats() map[string]*requestStats {
	m := make(map[string]*requestStats, len(requestNames))
	for _, n := range requestNames {
		m[n] = &requestStats{latency: metrics.NewHistogram(metrics.RequestBuckets)}
	}
	return m
}

type counters struct {
	accepted, rejected, evicted, malformed, timedOut atomic.Uint64
	seedBytes                                        atomic.Uint64
	mismatched                                       atomic.Uint64            // see conn.mismatch
	requests                                         map[string]*requestStats // fixed at New
}

var (
	descClients   = metrics.Desc{Name: "clients", Help: "Client connections in the client table."}
	descAccepted  = metrics.Desc{Name: "connections_accepted", Help: "Client connections accepted."}
	descRejected  = metrics.Desc{Name: "connections_rejected", Help: "Client connections closed at once: the client table was full of busy clients."}
	descEvicted   = metrics.Desc{Name: "connections_evicted", Help: "Idle client connections closed to make room for a new one."}
	descMalformed = metrics.Desc{Name: "requests_malformed", Help: "Requests that could not be parsed or named no known request."}
	descTimedOut  = metrics.Desc{Name: "requests_timed_out", Help: "Requests that did not arrive whole, or whose reply was not taken, in time."}
	descMismatch  = metrics.Desc{Name: "protocol_mismatches", Help: "Client connections that expected the other side to speak first (tlsmgr_protocol_announcement)."}
	descSeedBytes = metrics.Desc{Name: "seed_bytes", Help: "Bytes handed out by seed requests."}
	descCacheOn   = metrics.Desc{Name: "cache_enabled", Help: "1 if the cache is enabled."}
)

// requestDesc and latencyDesc are labelled with the request type; their
// stats names keep the form of earlier releases (requests_lookup).
func requestDesc(name string) metrics.Desc {
	return metrics.Desc{Name: "requests", Help: "Requests answered, by type.", Stat: "requests_" + name}
}

func latencyDesc(name string) metrics.Desc {
	return metrics.Desc{Name: "request_duration_seconds", Help: "Time from a request's arrival to its reply, by type.", Stat: "request_" + name + "_seconds"}
}

// collect emits the server's own figures and the caches'.
func (s *Server) collect(ctx context.Context, emit metrics.Emit) {
	emit.Gauge(descClients, float64(s.Clients()))
	emit.Counter(descAccepted, s.counters.accepted.Load())
	emit.Counter(descRejected, s.counters.rejected.Load())
	emit.Counter(descEvicted, s.counters.evicted.Load())
	emit.Counter(descMalformed, s.counters.malformed.Load())
	emit.Counter(descTimedOut, s.counters.timedOut.Load())
	emit.Counter(descMismatch, s.counters.mismatched.Load())
	for _, n := range requestNames {
		emit.With(metrics.Label{Name: "request", Value: n}).Counter(requestDesc(n), s.counters.requests[n].count.Load())
	}
	emit.Counter(descSeedBytes, s.counters.seedBytes.Load())
	for _, ct := range s.cfg.Caches {
		ce := emit.With(metrics.Label{Name: "cache", Value: ct.Name})
		on := 0.0
		if ct.Cache != nil {
			on = 1
		}
		ce.Gauge(descCacheOn, on)
		if ct.Cache != nil {
			ct.Cache.Collect(ctx, ce)
		}
	}
	// Latencies last: the stats reply lists the counters first, as
	// before.
	for _, n := range requestNames {
		emit.With(metrics.Label{Name: "request", Value: n}).Histogram(latencyDesc(n), s.counters.requests[n].latency)
	}
}

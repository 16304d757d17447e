package scache

import (
	"context"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
)

// MetricsCollector is implemented by stores with figures of their own (a
// file's damage, a remote store's state): Cache.Collect adds them under
// the cache's label.
type MetricsCollector interface {
	CollectMetrics(ctx context.Context, emit metrics.Emit)
}

// The cache's metrics; every one is labelled with the cache's name.
var (
	descTimeout     = metrics.Desc{Name: "cache_timeout", Help: "Session cache timeout in seconds."}
	descHits        = metrics.Desc{Name: "cache_hits", Help: "Lookups that found a live entry."}
	descMisses      = metrics.Desc{Name: "cache_misses", Help: "Lookups that found no live entry."}
	descExpired     = metrics.Desc{Name: "cache_expired", Help: "Lookups that found an expired entry, deleted on the way."}
	descUpdates     = metrics.Desc{Name: "cache_updates", Help: "Entries stored."}
	descRefused     = metrics.Desc{Name: "cache_refused", Help: "Updates refused: too large, or the store refusing changes."}
	descDeletes     = metrics.Desc{Name: "cache_deletes", Help: "Delete requests."}
	descSwept       = metrics.Desc{Name: "cache_swept", Help: "Expired entries removed by the background sweep."}
	descStoreErrors = metrics.Desc{Name: "cache_store_errors", Help: "Store calls that failed."}
	descStoreState  = metrics.Desc{Name: "cache_store", Help: "Error of the store's last report, when it failed.", Kind: metrics.InfoKind}
	descEntries     = metrics.Desc{Name: "cache_entries", Help: "Entries held (the local part, for a shared store)."}
	descBytes       = metrics.Desc{Name: "cache_bytes", Help: "Bytes held, counted as for *_max_bytes."}
	descEvictions   = metrics.Desc{Name: "cache_evictions", Help: "Entries evicted to keep within the bounds."}
	descFailing     = metrics.Desc{Name: "cache_store_failing", Help: "1 while the store's commits fail and it refuses changes."}
	descPending     = metrics.Desc{Name: "cache_writes_pending", Help: "Acknowledged changes not yet committed."}
	descWRefused    = metrics.Desc{Name: "cache_writes_refused", Help: "Changes refused while the store's commits failed."}
	descLost        = metrics.Desc{Name: "cache_writes_lost", Help: "Acknowledged changes never committed (a stop during an outage)."}
)

// Collect emits the cache's counters and its store's figures. The caller
// labels them with the cache's name.
func (c *Cache) Collect(ctx context.Context, emit metrics.Emit) {
	emit.Gauge(descTimeout, c.Timeout().Seconds())
	emit.Counter(descHits, c.hits.Load())
	emit.Counter(descMisses, c.misses.Load())
	emit.Counter(descExpired, c.expired.Load())
	emit.Counter(descUpdates, c.updates.Load())
	emit.Counter(descRefused, c.refused.Load())
	emit.Counter(descDeletes, c.deletes.Load())
	emit.Counter(descSwept, c.swept.Load())
	emit.Counter(descStoreErrors, c.storeErrors.Load())
	st, err := c.store.Stats(ctx)
	if err != nil {
		emit.Info(descStoreState, "error: "+err.Error())
		return
	}
	emit.Gauge(descEntries, float64(st.Entries))
	emit.Gauge(descBytes, float64(st.Bytes))
	emit.Counter(descEvictions, st.Evictions)
	emit.Gauge(descFailing, b2f(st.Failing))
	emit.Gauge(descPending, float64(st.Pending))
	emit.Counter(descWRefused, st.Refused)
	emit.Counter(descLost, st.Lost)
	if mc, ok := c.store.(MetricsCollector); ok {
		mc.CollectMetrics(ctx, emit)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

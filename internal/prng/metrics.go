package prng

import (
	"context"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
)

func desc(name, help string) metrics.Desc { return metrics.Desc{Name: "prng_" + name, Help: help} }

// Collect emits the pool's figures. Times are text in stats replies and,
// for Prometheus, seconds since the event.
func (m *Manager) Collect(_ context.Context, emit metrics.Emit) {
	st := m.Stats()
	emit.Counter(desc("bytes_served", "Bytes of pool output handed out."), st.BytesServed)
	emit.Counter(desc("reads", "Reads of the pool."), st.Reads)
	emit.Info(desc("source", "The entropy source (tls_random_source)."), st.Source)
	emit.Bool(desc("source_ok", "1 while the entropy source can be read and passes its health tests."), st.SourceOK)
	emit.Counter(desc("reseeds", "Reads of the entropy source counted as entropy."), st.Reseeds)
	since(emit, "last_reseed", "reseed", "the last read of the entropy source counted as entropy", st.LastReseed)
	emit.Counter(desc("reseed_failures", "Failed opens and reads of the entropy source."), st.ReseedFailures)
	emit.Counter(desc("source_health_failures", "Reads of the entropy source not counted: failing its health tests."), st.HealthFailures)
	emit.Counter(desc("os_entropy_failures", "Failed reads of the operating system's generator at reseeds."), st.OSEntropyFailures)
	emit.Info(desc("exchange_file", "The PRNG exchange file (tls_random_exchange_name)."), st.ExchangeFile)
	emit.Counter(desc("exchange_updates", "Successful updates of the exchange file."), st.ExchangeUpdates)
	since(emit, "last_exchange_update", "exchange_update", "the last update of the exchange file", st.LastExchangeUpdate)
	emit.Counter(desc("exchange_failures", "Failed updates of the exchange file."), st.ExchangeFailures)
}

// since emits when t was as text for stats replies ("never" if zero) and,
// once it has happened, the seconds since then for Prometheus.
func since(emit metrics.Emit, stat, name, what string, t time.Time) {
	text := "never"
	if !t.IsZero() {
		text = t.UTC().Format(time.RFC3339)
	}
	emit.Info(metrics.Desc{Name: "prng_" + stat, Help: "Time of " + what + ".", StatOnly: true}, text)
	if !t.IsZero() {
		emit.Gauge(metrics.Desc{Name: "prng_seconds_since_" + name, Help: "Seconds since " + what + ".", Stat: "-"}, time.Since(t).Seconds())
	}
}

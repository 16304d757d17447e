// Package metrics is the daemon's one registry of counters, gauges and
// histograms. Every part registers a Collector where it counts, once; the
// stats request, the Prometheus endpoint and tlsmgrctl all read the same
// registry, so a metric added anywhere shows up everywhere with no further
// code.
//
// A metric is described once, in Prometheus's terms (a base name in base
// units, labels, help), and its name in a stats reply follows from that:
// the label values, then the name, joined by "_" ("smtpd_cache_hits" for
// cache_hits{cache="smtpd"}), unless the Desc names it otherwise. Labels
// never carry an id: their values are fixed sets (cache names, request
// types, states).
package metrics

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what a metric's value means.
type Kind uint8

const (
	// CounterKind only goes up (until a restart); Prometheus names it
	// with _total.
	CounterKind Kind = iota
	// GaugeKind goes up and down.
	GaugeKind
	// InfoKind is a text value: a state, a path. A stats reply shows the
	// text; Prometheus gets a gauge of 1 with the text in a "value"
	// label. Use it only for values from a small set, or for
	// configuration, never for anything per request.
	InfoKind
	// HistogramKind is a distribution of durations in seconds.
	HistogramKind
)

// Namespace prefixes every Prometheus name.
const Namespace = "tlsmgr"

// Label is one label of a metric.
type Label struct{ Name, Value string }

// Desc describes a metric.
type Desc struct {
	// Name is the base name, without Namespace or _total, in base units
	// ("cache_hits", "request_duration_seconds").
	Name string
	Help string
	Kind Kind
	// Labels, in order; their values prefix the stats name.
	Labels []Label
	// Stat overrides the name in a stats reply; "-" leaves the metric
	// out of stats replies (Prometheus only).
	Stat string
	// StatOnly leaves the metric out of Prometheus: text that changes
	// (a key's name, a digest) would make a new series each time.
	StatOnly bool
}

// StatName is the metric's name in a stats reply.
func (d Desc) StatName() string {
	if d.Stat != "" {
		return d.Stat
	}
	var b strings.Builder
	for _, l := range d.Labels {
		b.WriteString(l.Value)
		b.WriteByte('_')
	}
	b.WriteString(d.Name)
	return b.String()
}

// Sample is one metric's value at collection time.
type Sample struct {
	Desc
	Value float64            // CounterKind, GaugeKind
	YesNo bool               // a gauge of 1 or 0 that stats show as yes or no
	Text  string             // InfoKind
	Hist  *HistogramSnapshot // HistogramKind
}

// Emit hands a collector's samples to the registry.
type Emit func(Sample)

// Counter emits a counter.
func (e Emit) Counter(d Desc, v uint64) {
	d.Kind = CounterKind
	e(Sample{Desc: d, Value: float64(v)})
}

// Gauge emits a gauge.
func (e Emit) Gauge(d Desc, v float64) {
	d.Kind = GaugeKind
	e(Sample{Desc: d, Value: v})
}

// Bool emits a gauge of 1 or 0, which stats replies show as yes or no.
func (e Emit) Bool(d Desc, v bool) {
	d.Kind = GaugeKind
	n := 0.0
	if v {
		n = 1
	}
	e(Sample{Desc: d, Value: n, YesNo: true})
}

// Info emits a text value.
func (e Emit) Info(d Desc, text string) {
	d.Kind = InfoKind
	e(Sample{Desc: d, Text: text})
}

// Histogram emits a histogram's snapshot.
func (e Emit) Histogram(d Desc, h *Histogram) {
	d.Kind = HistogramKind
	s := h.Snapshot()
	e(Sample{Desc: d, Hist: &s})
}

// With returns an Emit that adds labels in front of every sample's own.
func (e Emit) With(labels ...Label) Emit {
	return func(s Sample) {
		s.Labels = append(slices.Clone(labels), s.Labels...)
		e(s)
	}
}

// Collector emits the current values of one part. It is called for every
// stats request and every scrape, concurrently with the part's work, and
// should not block past ctx.
type Collector func(ctx context.Context, emit Emit)

// Registry holds the collectors, in registration order: the order of a
// stats reply.
type Registry struct {
	mu         sync.Mutex
	collectors []Collector
}

// New returns an empty registry.
func New() *Registry { return &Registry{} }

// Register adds c. A nil registry ignores it, so that parts can register
// unconditionally.
func (r *Registry) Register(c Collector) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, c)
}

// Gather runs every collector and returns their samples in order.
func (r *Registry) Gather(ctx context.Context) []Sample {
	r.mu.Lock()
	cs := slices.Clone(r.collectors)
	r.mu.Unlock()
	var out []Sample
	emit := func(s Sample) { out = append(out, s) }
	for _, c := range cs {
		c(ctx, emit)
	}
	return out
}

// Pairs renders samples as a stats reply's name/value pairs. A histogram
// becomes its count and its sum (seconds).
func Pairs(samples []Sample) [][2]string {
	out := make([][2]string, 0, len(samples))
	for _, s := range samples {
		name := s.StatName()
		if name == "-" {
			continue
		}
		switch {
		case s.Kind == InfoKind:
			out = append(out, [2]string{name, s.Text})
		case s.Kind == HistogramKind:
			out = append(out, [2]string{name + "_count", strconv.FormatUint(s.Hist.Count, 10)},
				[2]string{name + "_sum", formatValue(s.Hist.Sum)})
		case s.YesNo && s.Value != 0:
			out = append(out, [2]string{name, "yes"})
		case s.YesNo:
			out = append(out, [2]string{name, "no"})
		default:
			out = append(out, [2]string{name, formatValue(s.Value)})
		}
	}
	return out
}

// formatValue writes integers as integers (counters are), others in the
// shortest form that reads back the same.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Histogram counts durations into fixed buckets without locks.
type Histogram struct {
	bounds []float64 // upper bounds in seconds, ascending
	counts []atomic.Uint64
	count  atomic.Uint64
	sumNS  atomic.Uint64
}

// RequestBuckets are the bounds for request latencies: 25 µs to 10 s.
var RequestBuckets = []float64{
	25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10,
}

// NewHistogram returns a histogram with the given upper bounds (seconds).
func NewHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: slices.Clone(bounds), counts: make([]atomic.Uint64, len(bounds))}
}

// Observe counts one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	if i, _ := slices.BinarySearch(h.bounds, s); i < len(h.bounds) {
		h.counts[i].Add(1)
	}
	h.count.Add(1)
	if d > 0 {
		h.sumNS.Add(uint64(d))
	}
}

// HistogramSnapshot is a histogram's state: cumulative counts per upper
// bound, as Prometheus wants them.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

// Snapshot reads the histogram. Concurrent observations may land in a
// bucket and not yet in Count, or the other way round; Prometheus
// tolerates that, and the next scrape is exact again.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(h.bounds))}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		s.Buckets[b] = cum
	}
	s.Count = max(h.count.Load(), cum)
	s.Sum = float64(h.sumNS.Load()) / 1e9
	return s
}

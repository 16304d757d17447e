package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collectTimeout bounds one scrape's collection: a store that is slow to
// report must not hold the scrape (Prometheus's own timeout is 10 s).
const collectTimeout = 2 * time.Second

// promCollector turns the registry's samples into Prometheus metrics at
// each scrape. It describes nothing up front ("unchecked"): which metrics
// exist follows the configuration (which caches, which stores).
type promCollector struct{ r *Registry }

func (promCollector) Describe(chan<- *prometheus.Desc) {}

func (c promCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	for _, s := range c.r.Gather(ctx) {
		if s.StatOnly {
			continue
		}
		if m := promMetric(s); m != nil {
			ch <- m
		}
	}
}

// PromName is the Prometheus name of a metric.
func PromName(d Desc) string {
	name := Namespace + "_" + d.Name
	if d.Kind == CounterKind {
		name += "_total"
	}
	return name
}

func promMetric(s Sample) prometheus.Metric {
	names := make([]string, 0, len(s.Labels)+1)
	values := make([]string, 0, len(s.Labels)+1)
	for _, l := range s.Labels {
		names = append(names, l.Name)
		values = append(values, l.Value)
	}
	if s.Kind == InfoKind {
		names = append(names, "value")
		values = append(values, s.Text)
	}
	desc := prometheus.NewDesc(PromName(s.Desc), s.Help, names, nil)
	var m prometheus.Metric
	var err error
	switch s.Kind {
	case CounterKind:
		m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.Value, values...)
	case GaugeKind:
		m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.Value, values...)
	case InfoKind:
		m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, 1, values...)
	case HistogramKind:
		m, err = prometheus.NewConstHistogram(desc, s.Hist.Count, s.Hist.Sum, s.Hist.Buckets, values...)
	}
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

// Handler serves the registry in Prometheus's exposition format, with the
// Go runtime's and the process's standard metrics beside it.
func Handler(r *Registry) http.Handler {
	pr := prometheus.NewRegistry()
	pr.MustRegister(promCollector{r},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(pr, promhttp.HandlerOpts{
		// One bad metric must not hide the others.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             collectTimeout + time.Second,
	})
}

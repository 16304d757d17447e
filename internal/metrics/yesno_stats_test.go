package metrics

import (
	"context"
	"testing"
)

// TestBoolIsYesOrNoInStats: a Bool is "yes" when true and "no" when false
// in a stats reply, and a gauge of 1 or 0 for Prometheus.
func TestBoolIsYesOrNoInStats(t *testing.T) {
	r := New()
	r.Register(func(_ context.Context, emit Emit) {
		emit.Bool(Desc{Name: "store_up", Help: "Whether the store answers."}, true)
		emit.Bool(Desc{Name: "store_degraded", Help: "Whether the store is degraded."}, false)
	})
	samples := r.Gather(context.Background())
	got := Pairs(samples)
	want := [][2]string{{"store_up", "yes"}, {"store_degraded", "no"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Pairs = %q, want %q", got, want)
	}
	if len(samples) != 2 || samples[0].Value != 1 || samples[1].Value != 0 || samples[0].Kind != GaugeKind {
		t.Errorf("samples %+v, want gauges of 1 and 0", samples)
	}
}

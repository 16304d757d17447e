package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var (
	hitsDesc    = Desc{Name: "cache_hits", Help: "Lookups that found an entry."}
	entriesDesc = Desc{Name: "cache_entries", Help: "Entries held."}
	stateDesc   = Desc{Name: "store_state", Help: "State of the store."}
	reqDesc     = Desc{Name: "request_duration_seconds", Help: "Time to answer a request."}
)

func testRegistry(h *Histogram) *Registry {
	r := New()
	r.Register(func(_ context.Context, emit Emit) {
		emit.Counter(Desc{Name: "connections_accepted", Help: "Connections accepted."}, 7)
	})
	for _, cache := range []string{"smtpd", "smtp"} {
		r.Register(func(_ context.Context, emit Emit) {
			emit = emit.With(Label{"cache", cache})
			emit.Counter(hitsDesc, 3)
			emit.Gauge(entriesDesc, 2.5)
			emit.Info(stateDesc, "up")
		})
	}
	r.Register(func(_ context.Context, emit Emit) {
		emit.With(Label{"request", "lookup"}).Histogram(Desc{Name: reqDesc.Name, Help: reqDesc.Help, Stat: "lookup_request_seconds"}, h)
		emit.Gauge(Desc{Name: "hidden", Help: "Only for Prometheus.", Stat: "-"}, 1)
	})
	return r
}

func TestPairs(t *testing.T) {
	h := NewHistogram(RequestBuckets)
	h.Observe(30 * time.Microsecond)
	h.Observe(2 * time.Millisecond)
	got := Pairs(testRegistry(h).Gather(context.Background()))
	want := [][2]string{
		{"connections_accepted", "7"},
		{"smtpd_cache_hits", "3"}, {"smtpd_cache_entries", "2.5"}, {"smtpd_store_state", "up"},
		{"smtp_cache_hits", "3"}, {"smtp_cache_entries", "2.5"}, {"smtp_store_state", "up"},
		{"lookup_request_seconds_count", "2"}, {"lookup_request_seconds_sum", "0.00203"},
	}
	if len(got) != len(want) {
		t.Fatalf("Pairs = %q\nwant %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pair %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestHistogram(t *testing.T) {
	h := NewHistogram([]float64{0.001, 0.01})
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 4 || s.Buckets[0.001] != 2 || s.Buckets[0.01] != 3 {
		t.Errorf("snapshot %+v: want count 4, <=1ms 2, <=10ms 3 (bounds are inclusive)", s)
	}
	if s.Sum < 1.0065 || s.Sum > 1.0066 {
		t.Errorf("sum %v, want 1.0065", s.Sum)
	}
}

// A scrape renders every sample in the exposition format, by Prometheus's
// conventions, next to the Go and process collectors.
func TestPrometheusScrape(t *testing.T) {
	h := NewHistogram(RequestBuckets)
	h.Observe(30 * time.Microsecond)
	srv := httptest.NewServer(Handler(testRegistry(h)))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d:\n%s", resp.StatusCode, text)
	}
	for _, want := range []string{
		"# HELP tlsmgr_connections_accepted_total Connections accepted.",
		"# TYPE tlsmgr_connections_accepted_total counter",
		"tlsmgr_connections_accepted_total 7",
		`tlsmgr_cache_hits_total{cache="smtpd"} 3`,
		`tlsmgr_cache_hits_total{cache="smtp"} 3`,
		"# TYPE tlsmgr_cache_entries gauge",
		`tlsmgr_cache_entries{cache="smtpd"} 2.5`,
		`tlsmgr_store_state{cache="smtpd",value="up"} 1`,
		"# TYPE tlsmgr_request_duration_seconds histogram",
		`tlsmgr_request_duration_seconds_bucket{request="lookup",le="2.5e-05"} 0`,
		`tlsmgr_request_duration_seconds_bucket{request="lookup",le="5e-05"} 1`,
		`tlsmgr_request_duration_seconds_bucket{request="lookup",le="+Inf"} 1`,
		`tlsmgr_request_duration_seconds_count{request="lookup"} 1`,
		"tlsmgr_hidden 1",
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

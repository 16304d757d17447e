package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// scrape fetches the daemon's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d, %v\n%s", resp.StatusCode, err, b)
	}
	return string(b)
}

// TestMetricsEndpoint: known traffic through a real daemon shows in the
// Prometheus endpoint, with the same figures as in the stats reply, and by
// Prometheus's conventions.
func TestMetricsEndpoint(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := newStandalone(t, "tlsmgr_metrics_address="+addr)
	s.start(t)
	ctx := context.Background()
	c := s.client()
	defer c.Close()
	const secretID = "metrics-test-id-that-must-not-appear"
	for i := range 2 {
		if err := c.Update(ctx, "smtpd", fmt.Sprint(secretID, i), []byte("session")); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := c.Lookup(ctx, "smtpd", secretID+"0"); err != nil {
			t.Fatal(err)
		}
	}
	c.Lookup(ctx, "smtpd", "absent")
	if _, err := c.Seed(ctx, 32); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TicketKey(ctx, nil); err != nil {
		t.Fatal(err)
	}

	text := scrape(t, addr)
	for _, want := range []string{
		`tlsmgr_cache_hits_total{cache="smtpd"} 3`,
		`tlsmgr_cache_misses_total{cache="smtpd"} 1`,
		`tlsmgr_cache_updates_total{cache="smtpd"} 2`,
		`tlsmgr_cache_entries{cache="smtpd"} 2`,
		`tlsmgr_cache_enabled{cache="smtpd"} 1`,
		`tlsmgr_requests_total{request="lookup"} 4`,
		`tlsmgr_requests_total{request="update"} 2`,
		`tlsmgr_requests_total{request="seed"} 1`,
		`tlsmgr_request_duration_seconds_count{request="lookup"} 4`,
		`tlsmgr_seed_bytes_total 32`,
		`tlsmgr_tktkey_issued_total 1`,
		`tlsmgr_tktkey_mode{value="memory"} 1`,
		`tlsmgr_prng_source_ok 1`,
		"tlsmgr_prng_reseeds_total ",
		"tlsmgr_prng_exchange_updates_total ",
		`tlsmgr_clients 1`,
		"# TYPE tlsmgr_request_duration_seconds histogram",
		"# TYPE tlsmgr_cache_hits_total counter",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, secretID) {
		t.Error("/metrics shows a session id")
	}
	// Conventions: every counter ends in _total, every series of ours
	// has the prefix, no label carries an id-like value.
	typeLine := regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)
	for _, m := range typeLine.FindAllStringSubmatch(text, -1) {
		name, kind := m[1], m[2]
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.HasPrefix(name, "tlsmgr_") {
			t.Errorf("metric %s lacks the tlsmgr_ prefix", name)
		}
		if kind == "counter" != strings.HasSuffix(name, "_total") {
			t.Errorf("%s %s: counters, and only counters, end in _total", kind, name)
		}
	}

	// A fleet member: the Redis backends' series.
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	faddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	f := newStandalone(t, "tlsmgr_metrics_address="+faddr,
		"smtpd_tls_session_cache_database=redis:"+cf, "tlsmgr_ticket_key_database=redis:"+cf)
	f.start(t)
	fc := f.client()
	defer fc.Close()
	fc.Update(ctx, "smtpd", "fleet-id", []byte("session"))
	fc.Lookup(ctx, "smtpd", "fleet-id")
	fc.TicketKey(ctx, nil)
	fleetText := scrape(t, faddr)
	for _, want := range []string{
		`tlsmgr_redis_state{backend="smtpd",cache="smtpd",value="up"} 1`,
		`tlsmgr_redis_state{backend="tktkey",value="up"} 1`,
		`tlsmgr_cache_redis_tracking{cache="smtpd",value="on"} 1`,
		`tlsmgr_tktkey_mode{value="fleet"} 1`,
		`tlsmgr_tktkey_fleet_up 1`,
	} {
		if !strings.Contains(fleetText, want) {
			t.Errorf("a fleet member's /metrics lacks %q", want)
		}
	}
	// The ring's keys (names, epochs), its digest and the times of day
	// are for stats only: as series they would be a new one at every
	// rotation, and the names need not leave the host.
	for _, never := range []*regexp.Regexp{regexp.MustCompile(`tktkey_ring_key`), regexp.MustCompile(`tktkey_ring_digest`),
		regexp.MustCompile(`tktkey_last_refresh[{ ]`), regexp.MustCompile(`(?m)^tlsmgr_pid\b`)} {
		if never.MatchString(fleetText) {
			t.Errorf("/metrics exports %q, which is for stats only", never)
		}
	}
	if st := f.stats(t); st["tktkey_ring_digest"] == "" || st["tktkey_last_refresh"] == "" {
		t.Errorf("stats lack the ring's digest or last refresh: %v", st)
	}

	// Every series the shipped Grafana dashboard plots exists.
	dash, err := os.ReadFile(filepath.Join(repoRoot(t), "contrib", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &parsed); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	series := regexp.MustCompile(`\btlsmgr_[a-z0-9_]+`)
	for _, p := range parsed.Panels {
		for _, tg := range p.Targets {
			for _, name := range series.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(name, "_bucket")
				if !strings.Contains(text, base) && !strings.Contains(fleetText, base) {
					t.Errorf("dashboard panel %q plots %s, which neither daemon exports", p.Title, name)
				}
			}
		}
	}

	// The same figures in the stats reply: one registry feeds both.
	st := s.stats(t)
	for name, want := range map[string]string{
		"smtpd_cache_hits": "3", "smtpd_cache_misses": "1", "requests_lookup": "4",
		"seed_bytes": "32", "tktkey_issued": "1", "request_lookup_seconds_count": "4",
	} {
		if st[name] != want {
			t.Errorf("stats %s = %q, want %q", name, st[name], want)
		}
	}
}

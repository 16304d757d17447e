package daemon_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsSilentConnectionsCutOff: connections to the /metrics port
// that never send a request hold the few places only until the header
// timeout (seconds): a scrape behind them is answered then, however long
// they stay open.
func TestMetricsSilentConnectionsCutOff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e := newEnv(t, memoryCaches)
	p := e.start(t, "tlsmgr_metrics_address="+addr)
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for i := 0; i < 8; i++ { // as many as the places (maxMetricsConns)
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		silent = append(silent, c)
	}
	start := time.Now()
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://%s/metrics", addr))
	if err != nil {
		t.Fatalf("scrape behind silent connections: %v\n%s", err, p.Stderr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "tlsmgr_") {
		t.Errorf("scrape: %d %.200s", resp.StatusCode, body)
	}
	t.Logf("scrape answered after %v", time.Since(start))
}

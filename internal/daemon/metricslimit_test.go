package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// TestMetricsCannotStarveClients: however many connections idle on the
// /metrics port, Postfix's clients still get theirs, within the file
// limit that tlsmgr_client_limit was checked against.
func TestMetricsCannotStarveClients(t *testing.T) {
	e := newEnv(t, memoryCaches)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// 90 clients and the reserve fit in 160 descriptors.
	args := append([]string{"-listen", e.Sock}, e.Opts("tlsmgr_client_limit=90", "tlsmgr_metrics_address="+addr)...)
	cmd := e.Command("/bin/sh", append([]string{"-c", `ulimit -n 160 && exec "$0" "$@"`, tlsmgrBin}, args...)...)
	p := daemontest.StartCmd(t, cmd)
	p.WaitServing(t, e.Sock)

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 400; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("metrics connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	time.Sleep(200 * time.Millisecond) // let the daemon accept what it will
	var clients []*client.Client
	for i := 0; i < 60; i++ {
		c := client.New(e.Sock, client.Options{Timeout: 5 * time.Second})
		clients = append(clients, c)
		if _, err := c.Seed(context.Background(), 8); err != nil {
			t.Fatalf("client %d with 400 idle metrics connections: %v\n%s", i, err, p.Stderr)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	// Once the idle ones go, a scrape is answered.
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	hc := &http.Client{Timeout: 20 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://%s/metrics", addr))
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "tlsmgr_") {
		t.Errorf("scrape: %.200s", body)
	}
	if s := p.Stderr.String(); strings.Contains(s, "too many open files") {
		t.Errorf("the daemon ran out of descriptors:\n%s", s)
	}
}

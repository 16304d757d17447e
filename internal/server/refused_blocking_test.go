package server

import (
	"io"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestRefusedConnectionsReleaseBlockingIO: a connection refused because
// every client in the table is mid-request gives back its place among
// the MaxBlocking connections served with blocking I/O; otherwise a
// local user could use them all up by connecting while the table is busy,
// and every later client would be served through the netpoller.
func TestRefusedConnectionsReleaseBlockingIO(t *testing.T) {
	if netpoll {
		t.Skip("blocking I/O only")
	}
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.MaxClients = 1
		c.RequestTimeout = time.Minute // the half-sent request must wait
	})
	a := f.dial(t)
	io.WriteString(a.nc, policyReq[:9])
	f.waitTable(t, 0, 1)
	for range 5 {
		f.dialRefused(t)
	}
	waitUntil(t, "only the client in the table holds blocking I/O", func() bool { return f.srv.blocking.Load() == 1 })
	io.WriteString(a.nc, policyReq[9:])
	a.expect(policyOK)
	a.nc.Close()
	waitUntil(t, "no connection holds blocking I/O", func() bool { return f.srv.blocking.Load() == 0 })
	if got := f.stat("connections_rejected"); got != "5" {
		t.Errorf("connections_rejected = %s, want 5", got)
	}
}

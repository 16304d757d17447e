package daemon

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
)

// openMetrics opens the listener of tlsmgr_metrics_address with the
// other sockets: before the chroot and while still root, so that any
// address the administrator names can be bound.
func (d *daemon) openMetrics() error {
	if d.params.MetricsAddress == "" {
		return nil
	}
	l, err := net.Listen("tcp", d.params.MetricsAddress)
	if err != nil {
		return fmt.Errorf("tlsmgr_metrics_address: %w", err)
	}
	d.metricsListener = l
	return nil
}

// serveMetrics serves /metrics on the listener, if there is one, until
// the returned function is called; a reload may replace the listener
// meanwhile (reloadMetrics), and the function stops whichever serves.
func (d *daemon) serveMetrics() (stop func()) {
	if d.metricsListener != nil {
		d.metricsHTTP = d.startMetrics(d.metricsListener)
	}
	return d.stopMetrics
}

// stopMetrics stops serving /metrics, closing the listener.
func (d *daemon) stopMetrics() {
	if d.metricsHTTP == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d.metricsHTTP.Shutdown(ctx)
	d.metricsHTTP = nil
}

// maxMetricsConns bounds the /metrics connections open at once: they
// take descriptors from the reserve that tlsmgr_client_limit leaves
// (server.CheckLimits), so that however many connect, Postfix's clients
// keep theirs. Connections past it wait in the kernel's queue.
const maxMetricsConns = 8

// startMetrics serves /metrics on l. Slow or idle scrapers are cut off:
// the endpoint must cost the daemon nothing it needs for its clients.
func (d *daemon) startMetrics(l net.Listener) *http.Server {
	l = netutil.LimitListener(l, maxMetricsConns)
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(d.metrics))
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		// A kept-alive connection holds one of the few places.
		IdleTimeout:    10 * time.Second,
		MaxHeaderBytes: 8 << 10,
		// Failed scrapes are the scraper's to report.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	maillog.Infof(d.log, "serving metrics on http://%s/metrics", l.Addr())
	go hs.Serve(l)
	return hs
}

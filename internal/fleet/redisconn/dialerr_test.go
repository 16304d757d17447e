package redisconn

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// A call that gave up waiting for a dial sees only its own deadline; the
// warning that Redis is unavailable adds what the dial said, for the
// whole client from any address, for a cluster node from its own.
func TestDownMessageSaysWhyDialFailed(t *testing.T) {
	// A server that answers: the pool's own dials (it keeps idle
	// connections) succeed and leave no failure of their own.
	srv := redistest.Single(t)
	s := single(srv.Addr)
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	failing := c.noteDials(func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")
	})
	if _, err := failing(context.Background(), "tcp", "10.0.0.9:6379"); err == nil {
		t.Fatal("the failing dial succeeded")
	}
	if err := c.lastDialErr(""); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("lastDialErr of the whole client: %v", err)
	}
	if err := c.lastDialErr("10.0.0.9:6379"); err == nil {
		t.Fatal("lastDialErr of the node that failed: nil")
	}
	if err := c.lastDialErr("10.0.0.8:6379"); err != nil {
		t.Fatalf("lastDialErr of another node: %v", err)
	}
	c.breaker("").onDown(context.DeadlineExceeded)
	log.Want(t, []string{"warn", "unavailable: context deadline exceeded (connecting: tls: failed to verify certificate", "serving from the local cache"})
	log.Reset()

	// A node's breaker names only its own dial failures.
	c.breaker("10.0.0.8:6379").onDown(context.DeadlineExceeded)
	c.breaker("10.0.0.9:6379").onDown(context.DeadlineExceeded)
	log.Want(t,
		[]string{"warn", "node 10.0.0.8:6379 unavailable: context deadline exceeded; serving"},
		[]string{"warn", "node 10.0.0.9:6379 unavailable: context deadline exceeded (connecting: tls: "})

	// A dial that succeeds clears its address; an old failure is not told.
	ok := c.noteDials(func(context.Context, string, string) (net.Conn, error) { a, _ := net.Pipe(); return a, nil })
	if conn, err := ok(context.Background(), "tcp", "10.0.0.9:6379"); err == nil {
		conn.Close()
	}
	if err := c.lastDialErr(""); err != nil {
		t.Fatalf("after a good dial: %v", err)
	}
	c.mu.Lock()
	c.dialErrs["10.0.0.7:6379"] = dialFailure{errors.New("old"), time.Now().Add(-time.Minute)}
	c.mu.Unlock()
	if err := c.lastDialErr(""); err != nil {
		t.Fatalf("a failure a minute old: %v", err)
	}
}

package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// connPair returns both ends of a UNIX stream connection that no server
// has accepted: the server's end, to hand to ServeConnSync, and the
// client's, as a raw client that has not read the announcement yet.
func connPair(t *testing.T) (net.Conn, *raw) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "pair"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return sc, &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// serveSync runs ServeConnSync on sc and returns a channel closed when it
// returns.
func serveSync(s *Server, sc net.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() { defer close(done); s.ServeConnSync(sc) }()
	return done
}

func returnsWithin(t *testing.T, done <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("ServeConnSync still serving %v after %s", d, what)
	}
}

// TestServeConnSync: ServeConnSync (the -S client) serves its connection
// for as long as its client stays, idle or not, and returns as soon as the
// client closes it, as Shutdown stops it, or at once if it is refused.
func TestServeConnSync(t *testing.T) {
	for _, np := range []bool{false, true} {
		name := "blocking"
		if np {
			name = "netpoll"
		}
		t.Run(name, func(t *testing.T) {
			netpoll = np
			defer func() { netpoll = false }()
			testServeConnSync(t)
		})
	}
}

func testServeConnSync(t *testing.T) {
	f := newFixture(t)

	sc, c := connPair(t)
	done := serveSync(f.srv, sc)
	c.expect("protocol=tlsmgr_protocol")
	c.send("request", "seed", "size", "8")
	if got := c.readList(); !strings.HasPrefix(got, ok+" seed=") || got == ok+" seed=" {
		t.Fatalf("seed reply %q", got)
	}
	select {
	case <-done:
		t.Fatal("ServeConnSync returned while its client was still connected")
	case <-time.After(100 * time.Millisecond):
	}
	if n := f.srv.Clients(); n != 1 {
		t.Fatalf("Clients() = %d while serving, want 1", n)
	}
	c.send("request", "policy", "cache_type", "smtp").expect(ok + " cachable=1 timeout=3600")
	c.nc.Close()
	returnsWithin(t, done, time.Second, "its client closed the connection")
	if n := f.srv.Clients(); n != 0 {
		t.Fatalf("Clients() = %d once ServeConnSync returned, want 0", n)
	}

	// Shutdown stops an idle client's connection and ServeConnSync returns.
	sc, c = connPair(t)
	done = serveSync(f.srv, sc)
	c.expect("protocol=tlsmgr_protocol")
	if err := f.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	returnsWithin(t, done, time.Second, "Shutdown")
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed by Shutdown: %v", err)
	}

	// After Shutdown a connection is refused: closed, and at once.
	sc, c = connPair(t)
	returnsWithin(t, serveSync(f.srv, sc), time.Second, "the server was shut down")
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection after Shutdown not closed: %v", err)
	}
}

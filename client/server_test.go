package client_test

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
)

// Helpers shared by the client tests: an in-process tlsmgr server
// (servertest) and a fake server that speaks raw attr0 bytes.

type testServer = servertest.Server

// startServer serves tlsmgr on path (a new path in a temporary directory
// when empty) with smtpd and smtp caches enabled and lmtp disabled.
func startServer(t *testing.T, path string) *testServer { return servertest.Start(t, path) }

// wire encodes name, value, ... as one attr0 list, the values as given.
var wire = attr.Encode

var announcement = wire("protocol", "tlsmgr_protocol")

// fakeServer accepts connections and hands each to handle, with the
// connection's number (from 1).
type fakeServer struct {
	path  string
	l     net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
}

func startFake(t *testing.T, handle func(nc net.Conn, r *attr.Reader, n int)) *fakeServer {
	t.Helper()
	f := &fakeServer{path: filepath.Join(t.TempDir(), "fake")}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.l = l
	var mu sync.Mutex
	var open []net.Conn
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			n := int(f.conns.Add(1))
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer nc.Close()
				handle(nc, attr.NewReader(nc, attr.Limits{}), n)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, nc := range open {
			nc.Close()
		}
		mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// answer reads one request per reply and sends the replies in order,
// then keeps the connection open until the client closes it.
func answer(replies ...string) func(net.Conn, *attr.Reader, int) {
	return func(nc net.Conn, r *attr.Reader, _ int) {
		io.WriteString(nc, announcement)
		for _, rep := range replies {
			if _, err := r.ReadList(); err != nil {
				return
			}
			io.WriteString(nc, rep)
		}
		io.Copy(io.Discard, nc)
	}
}

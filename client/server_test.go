package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/attr"
	"github.com/gotlsmgr/tlsmgr/scache"
	"github.com/gotlsmgr/tlsmgr/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/server"
	"github.com/gotlsmgr/tlsmgr/tktkey"
)

// Helpers shared by the client tests: an in-process tlsmgr server and a
// fake server that speaks raw attr0 bytes.

type testLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLog) add(p, f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, p+fmt.Sprintf(f, a...))
}
func (l *testLog) Info(f string, a ...any)         { l.add("", f, a...) }
func (l *testLog) Warn(f string, a ...any)         { l.add("warning: ", f, a...) }
func (l *testLog) Debug(_ int, f string, a ...any) { l.add("debug: ", f, a...) }
func (l *testLog) text() string                    { l.mu.Lock(); defer l.mu.Unlock(); return strings.Join(l.lines, "\n") }

type cryptoPool struct{}

func (cryptoPool) Read(b []byte) (int, error) { return rand.Read(b) }
func (cryptoPool) Mix([]byte)                 {}

type testServer struct {
	srv  *server.Server
	path string
	log  *testLog
	done chan struct{}
}

// startServer serves tlsmgr on path (a new path in a temporary directory
// when empty) with smtpd and smtp caches enabled and lmtp disabled.
func startServer(t *testing.T, path string) *testServer {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "tlsmgr")
	}
	ts := &testServer{path: path, log: &testLog{}, done: make(chan struct{})}
	const timeout = 3600 * time.Second
	lim := scache.Limits{MaxEntries: 10000, MaxBytes: 16 << 20}
	var caches []server.CacheType
	for _, name := range []string{"smtpd", "smtp", "lmtp"} {
		ct := server.CacheType{Name: name, Timeout: timeout}
		if name != "lmtp" {
			ct.Cache = scache.New(scache.Config{Name: name, Database: "memory:", Timeout: timeout, Log: ts.log}, memstore.New(lim))
		}
		caches = append(caches, ct)
	}
	keys, err := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: timeout, Rand: cryptoPool{}})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = server.New(server.Config{
		Caches: caches, Keys: keys, Pool: cryptoPool{}, Log: ts.log,
		Limits: attr.DefaultLimits, IPCTimeout: 30 * time.Second,
	})
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.srv.Serve(l); close(ts.done) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop shuts the server down (closing its clients' connections) and
// removes its socket. It may be called more than once.
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	<-ts.done
}

func (ts *testServer) stat(name string) string {
	for _, p := range ts.srv.Stats(context.Background()) {
		if p[0] == name {
			return p[1]
		}
	}
	return "(missing)"
}

// wire encodes name, value, ... as one attr0 list.
func wire(pairs ...string) string {
	var b strings.Builder
	for _, p := range pairs {
		b.WriteString(p)
		b.WriteByte(0)
	}
	b.WriteByte(0)
	return b.String()
}

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

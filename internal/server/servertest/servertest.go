// Package servertest runs in-process tlsmgr servers for tests, as
// net/http/httptest does for HTTP: smtpd and smtp caches in memory (lmtp
// disabled, so tests can see a disabled type), a ticket key ring, and a
// logger that records what the server says.
package servertest

import (
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
)

// Timeout is the session timeout of every cache type, and so of tickets.
const Timeout = time.Hour

// Log records the server's log lines.
type Log = testlog.Recorder

// Server is a running in-process server.
type Server struct {
	*server.Server
	Path string // its socket
	Log  *Log
	done chan struct{}
	once sync.Once
}

// Start serves tlsmgr on path, or on a new socket in a temporary
// directory when path is empty, until Stop or the end of the test.
func Start(t testing.TB, path string) *Server {
	t.Helper()
	return StartWith(t, path, nil)
}

// StartWith is Start with the server's Config changed by configure, if
// not nil, before the server is made.
func StartWith(t testing.TB, path string, configure func(*server.Config)) *Server {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "tlsmgr")
	}
	s := &Server{Path: path, Log: &testlog.Recorder{}, done: make(chan struct{})}
	lim := scache.Limits{MaxEntries: 100_000, MaxBytes: 256 << 20}
	var caches []server.CacheType
	for _, name := range []string{"smtpd", "smtp", "lmtp"} {
		ct := server.CacheType{Name: name, Timeout: Timeout}
		if name != "lmtp" {
			ct.Cache = scache.New(scache.Config{Name: name, Database: "memory:" + name, Timeout: Timeout, Log: s.Log}, memstore.New(lim))
		}
		caches = append(caches, ct)
	}
	keys, err := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: Timeout, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Caches: caches, Keys: keys, Pool: systemPool{}, Log: s.Log,
		Limits: attr.DefaultLimits, IPCTimeout: 30 * time.Second, BlockingIO: true,
	}
	if configure != nil {
		configure(&cfg)
	}
	s.Server = server.New(cfg)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.Serve(l); close(s.done) }()
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop shuts the server down, closing its clients' connections and
// removing its socket. Calling it again does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-s.done
	})
}

// Stat returns one counter of the server's stats, or "(missing)".
func (s *Server) Stat(name string) string {
	for _, p := range s.Stats(context.Background()) {
		if p[0] == name {
			return p[1]
		}
	}
	return "(missing)"
}

// systemPool serves seeds from the operating system's generator; the real
// PRNG pool has tests of its own.
type systemPool struct{}

func (systemPool) Read(b []byte) (int, error) { return rand.Read(b) }
func (systemPool) Mix([]byte)                 {}

// Package servertest runs in-process tlsmgr servers for tests, as
// net/http/httptest does for HTTP: smtpd and smtp caches in memory (lmtp
// disabled, so tests can see a disabled type), a ticket key ring, and a
// logger that records what the server says.
package servertest

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
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
	dir  string // Serve's temporary directory
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
	s, err := listen(path, configure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Serve is Start for callers without a testing.TB (examples, TestMain):
// the socket is in a new temporary directory, which Close removes.
func Serve() (*Server, error) {
	dir, err := os.MkdirTemp("", "servertest")
	if err != nil {
		return nil, err
	}
	s, err := listen(filepath.Join(dir, "tlsmgr"), nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.dir = dir
	return s, nil
}

// Close is Stop for a server that Serve started.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = s.Shutdown(ctx)
		<-s.done
	})
	return errors.Join(err, os.RemoveAll(s.dir))
}

func listen(path string, configure func(*server.Config)) (*Server, error) {
	s := &Server{Path: path, Log: &testlog.Recorder{}, done: make(chan struct{})}
	lim := scache.Limits{MaxEntries: 100_000, MaxBytes: 256 << 20}
	var caches []server.CacheType
	for _, name := range []string{"smtpd", "smtp", "lmtp"} {
		ct := server.DisabledCache(name, Timeout)
		if name != "lmtp" {
			ct = server.EnabledCache(scache.New(scache.Config{Name: name, Database: "memory:" + name, Timeout: Timeout, Log: s.Log.Logger()}, memstore.New(lim)))
		}
		caches = append(caches, ct)
	}
	keys, err := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: Timeout, Rand: rand.Reader})
	if err != nil {
		return nil, err
	}
	cfg := server.Config{
		Caches: caches, Keys: keys, Pool: systemPool{}, Log: s.Log.Logger(),
		Limits: attr.DefaultLimits, IPCTimeout: 30 * time.Second, BlockingIO: true,
	}
	if configure != nil {
		configure(&cfg)
	}
	s.Server = server.New(cfg)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	go func() { s.Serve(l); close(s.done) }()
	return s, nil
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

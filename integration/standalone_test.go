package integration

// Helpers for the tests that run our tlsmgr binary standalone (-listen)
// as a child process: the PRNG, persistent caches and bounds tests. The
// binaries are built once, in TestMain.

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Built by TestMain.
var tlsmgrBin, tlsmgrctlBin string

func TestMain(m *testing.M) {
	daemontest.Main(m, "..", func(b daemontest.Bins) { tlsmgrBin, tlsmgrctlBin = b.Tlsmgr, b.Tlsmgrctl })
}

// standalone is a configuration for a daemon on a socket of its own, with
// all three caches in memory unless settings say otherwise.
type standalone struct{ *daemontest.Env }

func newStandalone(t testing.TB, settings ...string) *standalone {
	return &standalone{daemontest.NewEnv(t, daemontest.MemoryCaches, settings...)}
}

// start runs the daemon with the settings plus extra -o settings and
// waits until it serves.
func (s *standalone) start(t testing.TB, extra ...string) *daemontest.Proc {
	t.Helper()
	return s.Start(t, tlsmgrBin, extra...)
}

func (s *standalone) client() *client.Client {
	return client.New(s.Sock, client.Options{Timeout: 10 * time.Second})
}

// stats returns the daemon's counters as a map.
func (s *standalone) stats(t *testing.T) map[string]string {
	t.Helper()
	c := s.client()
	defer c.Close()
	pairs, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, p := range pairs {
		m[p[0]] = p[1]
	}
	return m
}

func statInt(t *testing.T, st map[string]string, name string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(st[name], 10, 64)
	if err != nil {
		t.Fatalf("stats %s = %q: %v", name, st[name], err)
	}
	return n
}

func (s *standalone) checkStateFile(t *testing.T, path string) { s.CheckStateFile(t, path) }

func isNotFound(err error) bool { return errors.Is(err, client.ErrNotFound) }

package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gotlsmgr/tlsmgr/scache"
	"github.com/gotlsmgr/tlsmgr/scache/storetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, lim scache.Limits) scache.Store {
		s, err := Open(filepath.Join(t.TempDir(), "cache.db"), lim, Options{Logger: failOnWarn{t}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// failOnWarn fails a test that expects no warning.
type failOnWarn struct{ t testing.TB }

func (l failOnWarn) Warn(format string, args ...any) {
	l.t.Helper()
	l.t.Errorf("unexpected warning: "+format, args...)
}

// recorder keeps warnings for tests that expect them.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Warn(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

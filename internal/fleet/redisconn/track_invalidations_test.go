package redisconn

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// trackRec records what a tracker passes on: keys, and flushes (nil).
type trackRec struct {
	mu      sync.Mutex
	keys    []string
	flushes int
	empties int // calls with an empty, non-nil list
}

func (r *trackRec) invalidate(keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case keys == nil:
		r.flushes++
	case len(keys) == 0:
		r.empties++
	}
	r.keys = append(r.keys, keys...)
}

func (r *trackRec) seen(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.keys, key)
}

// trackedClient is a client of srv with a second's timeout (set-up is not
// what these tests measure) and a tracker of prefix.
func trackedClient(t *testing.T, srv *redistest.Server, prefix string, invalidate func([]string)) (*Client, *Tracker, *recLog) {
	t.Helper()
	s := single(srv.Addr)
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	tr := c.Track(prefix, invalidate)
	t.Cleanup(func() { tr.Close() })
	trackEventually(t, "tracking on", 10*time.Second, func() bool { _, on := tr.State(); return on })
	return c, tr, log
}

// trackEventually polls ok until it holds, failing the test after limit.
func trackEventually(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Only changes under the prefix are passed on.
func TestTrackerReportsOnlyItsPrefix(t *testing.T) {
	srv := redistest.Single(t)
	var rec trackRec
	c, _, _ := trackedClient(t, srv, "tt:", rec.invalidate)
	// Changes outside the prefix first: invalidations come in order, so
	// once the last is seen, any for these would have been too.
	for _, k := range []string{"other:a", "tt", "tlsmgr:tt:a", "TT:a"} {
		set(t, c, k, "v")
	}
	set(t, c, "tt:a", "v")
	trackEventually(t, "invalidation of tt:a", 10*time.Second, func() bool { return rec.seen("tt:a") })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.keys, []string{"tt:a"}) || rec.flushes != 0 {
		t.Errorf("passed on %q and %d flushes; want only tt:a", rec.keys, rec.flushes)
	}
}

// A flush of the database is passed on as nil: every key changed.
func TestTrackerReportsFlush(t *testing.T) {
	srv := redistest.Single(t)
	var rec trackRec
	c, _, _ := trackedClient(t, srv, "tt:", rec.invalidate)
	set(t, c, "tt:a", "v")
	trackEventually(t, "invalidation of tt:a", 10*time.Second, func() bool { return rec.seen("tt:a") })
	admin := srv.Client(t)
	for i, cmd := range []string{"FLUSHDB", "FLUSHALL"} {
		if err := admin.Do(context.Background(), cmd).Err(); err != nil {
			t.Fatal(err)
		}
		trackEventually(t, cmd+" passed on", 10*time.Second, func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return rec.flushes == i+1
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.empties != 0 {
		t.Errorf("%d calls with an empty list: a flush must be nil", rec.empties)
	}
}

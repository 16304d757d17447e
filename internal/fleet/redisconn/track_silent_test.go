package redisconn

import (
	"context"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// The subscriber connection can go silent while the tracking connection
// still answers (a firewall dropping one connection's packets): Redis may
// be writing invalidations nobody reads. The unanswered ping ends the
// session, whose invalidations may be lost, so tracking is off until a new
// session (a new epoch) proves itself; the old one does not come back.
func TestTrackerSubscriberSilent(t *testing.T) {
	srv := redistest.Single(t)
	proxy := redistest.NewProxy(t, srv.Addr)
	s := single(proxy.Addr)
	s.Timeout = time.Second
	c, _ := dial(t, s, nil)
	var rec trackRec
	tr := c.Track("tt:", rec.invalidate)
	t.Cleanup(func() { tr.Close() })
	trackEventually(t, "tracking on", 10*time.Second, func() bool { _, on := tr.State(); return on })
	gen, _ := tr.State()
	e := tr.Epoch()

	proxy.BlackHoleWhere(redistest.Contains("SUBSCRIBE"))
	if proxy.Holed() != 1 {
		t.Fatalf("%d connections black-holed, want the subscriber's", proxy.Holed())
	}
	trackEventually(t, "tracking off with the subscriber silent", 10*time.Second, func() bool { _, on := tr.State(); return !on })
	// Long enough for the session to be given up: its ping is a second
	// old at most when tracking goes off, so two more are plenty.
	time.Sleep(2 * time.Second)
	proxy.Restore()
	trackEventually(t, "tracking on again", 15*time.Second, func() bool { _, on := tr.State(); return on })
	if g, _ := tr.State(); g == gen || tr.Epoch() <= e {
		t.Errorf("generation %d, epoch %d after the subscriber was silent, from %d, %d: the old session came back", g, tr.Epoch(), gen, e)
	}
	// And changes are reported.
	set(t, c, "tt:after", "v")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	trackEventually(t, "invalidation of tt:after", 10*time.Second, func() bool { return rec.seen("tt:after") })
}

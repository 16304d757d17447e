package redisring

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// Members with different ticket lifetimes (so different epochs) keep
// different rings in the same Redis under the same prefix: an epoch
// number means another time span to each, so neither adopts nor reads the
// other's keys.
func TestRingsOfDifferentPeriodsApart(t *testing.T) {
	srv := redistest.Single(t)
	a, b := patientMember(t, srv, half), patientMember(t, srv, 2*half)

	epoch := time.Now().Unix() / half
	ka, kb := newKey(t, epoch), newKey(t, epoch)
	if got, err := a.Create(bg, epoch, ka, until(ka)); err != nil || got != ka {
		t.Fatalf("Create: %v", err)
	}
	if ring, err := b.Epochs(bg, []int64{epoch}); err != nil || len(ring) != 0 {
		t.Fatalf("a member of another period reads %d keys, %v", len(ring), err)
	}
	if got, err := b.Create(bg, epoch, kb, until(kb)); err != nil || got != kb {
		t.Fatalf("a member of another period adopted a key (%v), want its own", err)
	}
	if ring, err := a.Epochs(bg, []int64{epoch}); err != nil || ring[epoch] != ka {
		t.Fatalf("after the other period's Create: %v", err)
	}
	if n := len(srv.Client(t).Keys(bg, "*").Val()); n != 4 {
		t.Errorf("%d Redis keys, want 4 (two rings, by epoch and by name)", n)
	}
}

// patientMember is member with a timeout of a second, for what a loaded
// machine must not turn into a timeout, and a period of its own.
func patientMember(t *testing.T, srv *redistest.Server, half int64, keys ...[32]byte) *Store {
	t.Helper()
	if len(keys) == 0 {
		keys = [][32]byte{sealKey}
	}
	c, err := redisconn.New(&settings.Settings{Path: "test.cf", Servers: []string{srv.Addr},
		Timeout: time.Second, KeyPrefix: settings.DefaultKeyPrefix}, nil, "tktkey")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := seal.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return New(c, s, settings.DefaultKeyPrefix, half)
}

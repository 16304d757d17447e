package redisring

import (
	"errors"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// The record found under a name must hold the key of that name: a sealed
// record of another key (a stale or planted one, which opens since it is
// sealed for that Redis key) is refused, and the other key not returned.
func TestByNameChecksTheName(t *testing.T) {
	srv := redistest.Single(t)
	a := patientMember(t, srv, half)
	epoch := time.Now().Unix() / half
	want, other := newKey(t, epoch), newKey(t, epoch)
	nk := a.nameKey(want.Name)
	if err := srv.Client(t).Set(bg, nk, a.seal(nk, &other), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	k, err := a.ByName(bg, want.Name)
	if err == nil || errors.Is(err, tktkey.ErrUnknownKey) || k != (proto.TicketKey{}) {
		t.Fatalf("ByName found a record of another key: %v, returned it: %v; want an error", err, k == other)
	}
}

// A record under the name that does not open is an error, not a miss:
// tktkey.ErrUnknownKey says Redis has no such key, which the caller may
// remember; an unreadable record is a fault of the store.
func TestByNameUnreadableRecord(t *testing.T) {
	srv := redistest.Single(t)
	a := patientMember(t, srv, half)
	admin := srv.Client(t)
	epoch := time.Now().Unix() / half
	k := newKey(t, epoch)
	if _, err := a.Create(bg, epoch, k, until(k)); err != nil {
		t.Fatal(err)
	}
	nk := a.nameKey(k.Name)
	good, _ := admin.Get(bg, nk).Bytes()
	for what, v := range map[string][]byte{
		"damaged":       append(good[:len(good)-1:len(good)-1], good[len(good)-1]^1),
		"moved":         a.seal(a.epochKey(epoch), &k), // sealed for another Redis key
		"not sealed":    []byte("junk"),
		"other version": append([]byte{2}, good[1:]...),
	} {
		admin.Set(bg, nk, v, time.Hour)
		got, err := a.ByName(bg, k.Name)
		if err == nil || errors.Is(err, tktkey.ErrUnknownKey) || !errors.Is(err, seal.ErrOpen) || got != (proto.TicketKey{}) {
			t.Errorf("%s record: %v; want an error wrapping seal.ErrOpen, not ErrUnknownKey", what, err)
		}
	}
	admin.Set(bg, nk, good, time.Hour)
	if got, err := a.ByName(bg, k.Name); err != nil || got != k {
		t.Fatalf("restored record: %v", err)
	}
}

package redisring

import (
	"errors"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// When none of the stored keys asked for opens (another fleet's seal key,
// damage), Epochs says so with an error rather than report an empty ring;
// one that opens among them is returned without error.
func TestEpochsNothingOpensIsAnError(t *testing.T) {
	srv := redistest.Single(t)
	a := patientMember(t, srv, half)
	stranger := patientMember(t, srv, half, [32]byte{9, 9, 9})
	admin := srv.Client(t)
	epoch := time.Now().Unix() / half
	k0, k1 := newKey(t, epoch), newKey(t, epoch+1)
	for e, k := range map[int64]proto.TicketKey{epoch: k0, epoch + 1: k1} {
		if _, err := a.Create(bg, e, k, until(k)); err != nil {
			t.Fatal(err)
		}
	}
	ring, err := stranger.Epochs(bg, []int64{epoch, epoch + 1})
	if err == nil || !errors.Is(err, seal.ErrOpen) || len(ring) != 0 {
		t.Fatalf("a member without the seal key: %d keys, %v; want an error wrapping seal.ErrOpen", len(ring), err)
	}
	// Damage one: the other is still read, without error.
	admin.Set(bg, a.epochKey(epoch), "not a sealed value", time.Hour)
	ring, err = a.Epochs(bg, []int64{epoch - 1, epoch, epoch + 1})
	if err != nil || len(ring) != 1 || ring[epoch+1] != k1 {
		t.Fatalf("one damaged of two: %d keys, %v; want the intact one", len(ring), err)
	}
	// Damage both.
	admin.Set(bg, a.epochKey(epoch+1), "", time.Hour)
	if ring, err := a.Epochs(bg, []int64{epoch - 1, epoch, epoch + 1}); err == nil || !errors.Is(err, seal.ErrOpen) || len(ring) != 0 {
		t.Fatalf("both damaged: %d keys, %v; want an error wrapping seal.ErrOpen", len(ring), err)
	}
	// Nothing stored at all is no error.
	if ring, err := a.Epochs(bg, []int64{epoch + 5, epoch + 6}); err != nil || len(ring) != 0 {
		t.Fatalf("nothing stored: %d keys, %v", len(ring), err)
	}
}

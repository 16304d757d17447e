package redisring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

const half = 1800 // T/2 of the default smtpd timeout

var sealKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// member is one daemon's view of the fleet ring.
func member(t *testing.T, srv *redistest.Server, keys ...[32]byte) *Store {
	t.Helper()
	if len(keys) == 0 {
		keys = [][32]byte{sealKey}
	}
	c, err := redisconn.New(&settings.Settings{Path: "test.cf", Servers: []string{srv.Addr},
		Timeout: 50 * time.Millisecond, KeyPrefix: settings.DefaultKeyPrefix}, nil, "tktkey")
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

func newKey(t *testing.T, epoch int64) proto.TicketKey {
	t.Helper()
	var k proto.TicketKey
	for _, b := range [][]byte{k.Name[:], k.AES[:], k.HMAC[:]} {
		rand.Read(b)
	}
	k.Expiry = (epoch+1)*half - 1
	return k
}

func until(k proto.TicketKey) time.Time { return time.Unix(k.Expiry+half, 0) }

var bg = context.Background()

// One key per epoch for the whole fleet: the first Create wins, the others
// adopt it; every member finds it by epoch and by name.
func TestOneKeyPerEpoch(t *testing.T) {
	srv := redistest.Single(t)
	a, b, c := member(t, srv), member(t, srv), member(t, srv)
	epoch := time.Now().Unix() / half
	ka, kb := newKey(t, epoch), newKey(t, epoch)
	got, err := a.Create(bg, epoch, ka, until(ka))
	if err != nil || got != ka {
		t.Fatalf("first Create = %v; want its own key", err)
	}
	got, err = b.Create(bg, epoch, kb, until(kb))
	if err != nil || got != ka {
		t.Fatalf("second Create did not adopt the first key (%v)", err)
	}
	next := newKey(t, epoch+1)
	if _, err := c.Create(bg, epoch+1, next, until(next)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Store{a, b, c} {
		ring, err := m.Epochs(bg, []int64{epoch - 1, epoch, epoch + 1})
		if err != nil || len(ring) != 2 || ring[epoch] != ka || ring[epoch+1] != next {
			t.Fatalf("Epochs = %d keys, %v", len(ring), err)
		}
		if k, err := m.ByName(bg, ka.Name); err != nil || k != ka {
			t.Fatalf("ByName: %v", err)
		}
	}
	if _, err := a.ByName(bg, kb.Name); !errors.Is(err, tktkey.ErrUnknownKey) {
		t.Fatalf("the losing key is known by name: %v", err)
	}
	// Redis forgets a key when it stops decrypting.
	ttl := srv.Client(t).PTTL(bg, a.epochKey(epoch)).Val()
	if want := time.Until(until(ka)); ttl < want-5*time.Second || ttl > want+time.Second {
		t.Errorf("epoch key expires in %v, want %v", ttl, want)
	}
}

// Redis never holds a key, its name or its epoch's key in the clear, and
// a value moved under another key does not open.
func TestSealedAtRest(t *testing.T) {
	srv := redistest.Single(t)
	a := member(t, srv)
	epoch := time.Now().Unix() / half
	var keys []proto.TicketKey
	for e := epoch; e < epoch+3; e++ {
		k := newKey(t, e)
		keys = append(keys, k)
		if _, err := a.Create(bg, e, k, until(k)); err != nil {
			t.Fatal(err)
		}
	}
	admin := srv.Client(t)
	all := admin.Keys(bg, "*").Val()
	if len(all) != 6 {
		t.Fatalf("%d Redis keys, want 6: %q", len(all), all)
	}
	for _, rk := range all {
		v, _ := admin.Get(bg, rk).Bytes()
		for _, k := range keys {
			for _, secret := range [][]byte{k.Name[:], k.AES[:], k.HMAC[:]} {
				for _, form := range [][]byte{secret, []byte(hex.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(secret))} {
					if bytes.Contains(v, form[:8]) || bytes.Contains([]byte(rk), form[:8]) {
						t.Fatalf("key material in the clear under %s", rk)
					}
				}
			}
		}
	}
	// Swap the values of two epochs: neither opens any more.
	e0, e1 := a.epochKey(epoch), a.epochKey(epoch+1)
	v0, _ := admin.Get(bg, e0).Bytes()
	v1, _ := admin.Get(bg, e1).Bytes()
	admin.Set(bg, e0, v1, time.Hour)
	admin.Set(bg, e1, v0, time.Hour)
	ring, err := a.Epochs(bg, []int64{epoch, epoch + 1, epoch + 2})
	if err != nil || len(ring) != 1 || ring[epoch+2] != keys[2] {
		t.Fatalf("after a swap Epochs = %d keys, %v; want only the untouched one", len(ring), err)
	}
}

// A member with other seal keys cannot read the ring; one that lists the
// old key after a rotation can.
func TestSealKeyRotation(t *testing.T) {
	srv := redistest.Single(t)
	old := member(t, srv)
	epoch := time.Now().Unix() / half
	k := newKey(t, epoch)
	if _, err := old.Create(bg, epoch, k, until(k)); err != nil {
		t.Fatal(err)
	}
	newer := [32]byte{9, 9, 9}
	rotated := member(t, srv, newer, sealKey)
	if got, err := rotated.ByName(bg, k.Name); err != nil || got != k {
		t.Fatalf("rotated member finds a key by name: %v", err)
	}
	if ring, err := rotated.Epochs(bg, []int64{epoch}); err != nil || ring[epoch] != k {
		t.Fatalf("rotated member reads the ring: %d keys, %v", len(ring), err)
	}
	stranger := member(t, srv, newer)
	if ring, err := stranger.Epochs(bg, []int64{epoch}); err == nil && len(ring) > 0 {
		t.Fatal("a member without the seal key read the ring")
	}
	if _, err := stranger.ByName(bg, k.Name); err == nil {
		t.Fatal("a member without the seal key found a key by name")
	}
}

// A paused Redis makes every call fail within its deadline.
func TestOutageIsAnErrorInTime(t *testing.T) {
	srv := redistest.Single(t)
	a := member(t, srv)
	epoch := time.Now().Unix() / half
	srv.Pause()
	defer srv.Resume()
	k := newKey(t, epoch)
	var worst time.Duration
	for range 20 {
		start := time.Now()
		_, err1 := a.Epochs(bg, []int64{epoch})
		_, err2 := a.Create(bg, epoch, k, until(k))
		_, err3 := a.ByName(bg, k.Name)
		if err1 == nil || err2 == nil || err3 == nil || errors.Is(err3, tktkey.ErrUnknownKey) {
			t.Fatalf("calls to a paused Redis: %v, %v, %v", err1, err2, err3)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("slowest three calls to a paused Redis: %v", worst)
	if worst > 3*(50*time.Millisecond)+100*time.Millisecond {
		t.Errorf("three calls took %v with a 50ms timeout", worst)
	}
	srv.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := a.Create(bg, epoch, k, until(k)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("Redis back, calls still fail: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The keys of a cluster's epochs live in different slots.
func TestCluster(t *testing.T) {
	cl := redistest.Cluster(t)
	c, err := redisconn.New(&settings.Settings{Path: "test.cf", Servers: cl.Addrs, Cluster: true,
		Timeout: 200 * time.Millisecond, KeyPrefix: settings.DefaultKeyPrefix}, nil, "tktkey")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, _ := seal.New([][32]byte{sealKey})
	a := New(c, s, settings.DefaultKeyPrefix, half)
	epoch := time.Now().Unix() / half
	var want []int64
	for e := epoch; e < epoch+6; e++ {
		k := newKey(t, e)
		if _, err := a.Create(bg, e, k, until(k)); err != nil {
			t.Fatalf("Create epoch %d: %v", e, err)
		}
		want = append(want, e)
	}
	ring, err := a.Epochs(bg, want)
	if err != nil || len(ring) != len(want) {
		t.Fatalf("Epochs across slots: %d keys, %v", len(ring), err)
	}
}

// Every record of the ring, by epoch and by name, expires when its key
// stops decrypting: Redis must not keep keys for ever.
func TestRecordsExpire(t *testing.T) {
	srv := redistest.Single(t)
	a := member(t, srv)
	epoch := time.Now().Unix() / half
	k := newKey(t, epoch)
	if _, err := a.Create(bg, epoch, k, until(k)); err != nil {
		t.Fatal(err)
	}
	admin := srv.Client(t)
	all := admin.Keys(bg, "*").Val()
	if len(all) != 2 {
		t.Fatalf("%d Redis keys, want 2 (by epoch, by name): %q", len(all), all)
	}
	for _, rk := range all {
		// PTTL, not PEXPIRETIME: Redis 6 has only the former.
		ttl, err := admin.PTTL(bg, rk).Result()
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(ttl)
		if d := at.Sub(until(k)); ttl <= 0 || d < -2*time.Second || d > 2*time.Second {
			t.Errorf("%s expires at %v (%v), want %v", rk, at, ttl, until(k))
		}
	}
}

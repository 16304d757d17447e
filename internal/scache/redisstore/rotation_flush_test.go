package redisstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/redis/go-redis/v9"
)

// TestRotationOldNameAnswerNotTrusted: during a seal key rotation, an
// entry found under an older key's name is not kept as a trusted local
// copy (tracking watches the first name only), so a delete by a member
// not yet rotated, which removes only the old name, is seen at once.
func TestRotationOldNameAnswerNotTrusted(t *testing.T) {
	srv := redistest.Single(t)
	addrs := []string{srv.Addr}
	old := newMember(t, conf{addrs: addrs, keys: [][32]byte{k1}})
	rotated := newMember(t, conf{addrs: addrs, keys: [][32]byte{k2, k1}})
	waitTracking(t, old)
	waitTracking(t, rotated)
	now := time.Now()

	put(t, old, "a", now, []byte("a under k1"))
	wantEntry(t, rotated, "a", now, []byte("a under k1"))
	wantEntry(t, rotated, "a", now, []byte("a under k1")) // a second read, as a local copy would serve

	if found, err := old.Delete(ctx, "a"); err != nil || !found {
		t.Fatalf("old member's Delete(a) = %v, %v; want true", found, err)
	}
	settle(t, old)
	wantMiss(t, rotated, "a")
	rotated.wantRedisOnly(t)
}

// TestShortSealedValueIsAMiss: a value that opens but is too short to hold
// the write time (a foreign or buggy writer with the seal key) is a miss,
// counted as unopenable, never a crash.
func TestShortSealedValueIsAMiss(t *testing.T) {
	srv := redistest.Single(t)
	m := newMember(t, conf{addrs: []string{srv.Addr}})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	for n := range writtenLen {
		id := fmt.Sprint("short-", n)
		key := m.writeKey(id)
		v := m.sealer.Seal([]byte(key), make([]byte, n))
		if err := rdb.Set(ctx, key, v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		settle(t, m)
		if e, err := m.Get(ctx, id); !errors.Is(err, scache.ErrNotFound) {
			t.Fatalf("Get of a sealed value of %d bytes = %+v, %v; want ErrNotFound", n, e, err)
		}
	}
	if got := m.FleetStats().Unopenable; got != writtenLen {
		t.Fatalf("Unopenable = %d, want %d", got, writtenLen)
	}
	// Exactly the write time and no session is a valid (empty) entry.
	key := m.writeKey("empty")
	p := binary.BigEndian.AppendUint64(nil, uint64(time.Unix(1_800_000_000, 0).UnixNano()))
	if err := rdb.Set(ctx, key, m.sealer.Seal([]byte(key), p), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if e, err := m.Get(ctx, "empty"); err != nil || len(e.Session) != 0 || !e.Written.Equal(time.Unix(1_800_000_000, 0)) {
		t.Fatalf("Get of a value of exactly %d bytes = %+v, %v; want an empty session", writtenLen, e, err)
	}
}

// TestCacheFlushCountsClearedAsDeletes: tlsmgrctl flush of a Redis cache
// clears it for the fleet, and the cache counts every entry removed as a
// delete.
func TestCacheFlushCountsClearedAsDeletes(t *testing.T) {
	srv := redistest.Single(t)
	m := newMember(t, conf{addrs: []string{srv.Addr}})
	c := scache.New(scache.Config{Name: "smtpd", Database: "redis:", Timeout: time.Hour}, m)
	const n = 6
	for i := range n {
		if err := c.Update(ctx, fmt.Sprint("id-", i), []byte("session")); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, m)
	got, err := c.Flush(ctx)
	if err != nil || got != n {
		t.Fatalf("Flush = %d, %v; want %d", got, err, n)
	}
	s, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Deletes != n {
		t.Fatalf("Deletes after flushing %d entries = %d, want %d", n, s.Deletes, n)
	}
}

package redisring

import (
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// A key created when its decryption lifetime has already ended (a member
// whose clock or schedule ran late) still gets an expiry: Redis must never
// hold a ring record without one.
func TestCreateAfterUntilStillExpires(t *testing.T) {
	srv := redistest.Single(t)
	a := patientMember(t, srv, half)
	admin := srv.Client(t)
	epoch := time.Now().Unix() / half
	for i, until := range []time.Time{time.Now().Add(-time.Hour), time.Now().Add(-time.Millisecond), time.Now()} {
		e := epoch + int64(i)
		k := newKey(t, e)
		if _, err := a.Create(bg, e, k, until); err != nil {
			t.Fatalf("Create with until %v ago: %v", time.Since(until), err)
		}
		// What is still there must be on its way out; PTTL is -1 for a
		// key without an expiry, -2 for one that is gone.
		for _, rk := range []string{a.epochKey(e), a.nameKey(k.Name)} {
			if ttl := admin.PTTL(bg, rk).Val(); ttl == -1 || ttl > time.Second {
				t.Errorf("until %v ago: %s expires in %v", time.Since(until).Round(time.Millisecond), rk, ttl)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := admin.Keys(bg, "*").Val()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records still in Redis 10 s after their end: %q", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

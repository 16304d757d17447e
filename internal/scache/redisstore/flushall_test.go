package redisstore

import (
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// A FLUSHALL whose invalidation arrives between Redis's answer to a
// lookup and the decision to keep that answer: the answer is returned,
// but not kept as a trusted copy (a flush is reported for every key).
func TestFlushAllBetweenAnswerAndTrust(t *testing.T) {
	srv := redistest.Single(t)
	r := srv.Client(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	put(t, b, "id", now, []byte("v1"))
	settle(t, a)
	var once sync.Once
	a.afterRead = func(string) {
		once.Do(func() {
			if err := r.FlushAll(ctx).Err(); err != nil {
				t.Error(err)
			}
			// a has applied the invalidation.
			if err := a.tracker.Sync(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wantEntry(t, a, "id", now, []byte("v1"))
	a.afterRead = nil
	wantMiss(t, a, "id")
	a.wantRedisOnly(t)
}

package redistest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// KillClients closes, with CLIENT KILL, every connection to the server
// whose CLIENT LIST flags hold flag ("t": tracking, "P": subscribed),
// quietly for their owner; it returns how many.
func (s *Server) KillClients(t testing.TB, flag string) int {
	t.Helper()
	ctx := context.Background()
	admin := s.Client(t)
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		var id, flags string
		for _, f := range strings.Fields(line) {
			switch k, v, _ := strings.Cut(f, "="); k {
			case "id":
				id = v
			case "flags":
				flags = v
			}
		}
		if strings.Contains(flags, flag) {
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return n
}

// ForgeInvalidations publishes an invalidation of key on
// __redis__:invalidate every 2ms, as any client of the server may, until
// the returned stop is called (at the latest when t ends). Such messages
// must prove nothing to a tracker.
func (s *Server) ForgeInvalidations(t testing.TB, key string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	pub := s.Client(t)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			pub.Publish(ctx, "__redis__:invalidate", key)
			time.Sleep(2 * time.Millisecond)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

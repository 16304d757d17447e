package integration

// A member whose Redis (or whoever sits on the path to it) answers with
// replies that made go-redis panic or abort the runtime: the member starts,
// serves every request from its own state, counts the refusals, and stays
// up. Before the reply guard it died at its first GET, at start-up too
// (the ticket-key ring is loaded then), and so in a loop under a
// supervisor.

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redisfake"
)

func TestFleetHostileRedis(t *testing.T) {
	hostile := []string{
		"$9223372036854775807\r\n", // makeslice: len out of range
		"$1099511627776\r\n",       // fatal error: out of memory
		"=9223372036854775807\r\n",
		"!1099511627776\r\n",
		">9223372036854775807\r\n$10\r\ninvalidate\r\n",
	}
	var gets atomic.Int64
	fake := redisfake.Start(t, func(c *redisfake.Conn, args []string) bool {
		if args[0] != "GET" {
			return false
		}
		c.Send(hostile[int(gets.Add(1))%len(hostile)])
		return true
	})
	cf := fleetSettings(t, []string{fake.Addr})
	m := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf, "tlsmgr_ticket_key_database=redis:"+cf)
	p := m.start(t)
	ctx := context.Background()
	cl := m.client()
	defer cl.Close()

	for i := range 50 {
		id := "hostile-" + strconv.Itoa(i)
		if err := cl.Update(ctx, "smtpd", id, []byte("session")); err != nil {
			t.Fatalf("update: %v", err)
		}
		if got, err := cl.Lookup(ctx, "smtpd", id); err != nil || string(got) != "session" {
			t.Fatalf("lookup of a local entry: %q, %v", got, err)
		}
		if _, err := cl.Lookup(ctx, "smtpd", "never-written-"+id); !isNotFound(err) {
			t.Fatalf("lookup of an unknown entry: %v, want a miss", err)
		}
		if _, err := cl.TicketKey(ctx, nil); err != nil {
			t.Fatalf("ticket key: %v", err)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("the daemon exited: %v\n%s", p.Err(), p.Stderr)
	case <-time.After(100 * time.Millisecond):
	}
	if gets.Load() == 0 {
		t.Fatal("the daemon never asked the fake Redis")
	}
	st := m.stats(t)
	refused := statInt(t, st, "smtpd_cache_redis_replies_refused") + statInt(t, st, "redis_tktkey_replies_refused")
	t.Logf("%d GETs answered with hostile replies; refused: smtpd cache %s, tktkey %s; smtpd_cache_redis_state=%s",
		gets.Load(), st["smtpd_cache_redis_replies_refused"], st["redis_tktkey_replies_refused"], st["smtpd_cache_redis_state"])
	if refused == 0 {
		t.Errorf("no refusal counted; stats %v", st)
	}
}

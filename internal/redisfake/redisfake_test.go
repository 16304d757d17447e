package redisfake

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

var noMaint = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

func answerGet(c *Conn, args []string) bool {
	if args[0] == "GET" {
		c.Send(Bulk("value of " + args[1]))
		return true
	}
	return false
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Each kind of go-redis client tlsmgr makes connects to the fake and
// gets its answers.
func TestClients(t *testing.T) {
	s := Start(t, answerGet)
	for _, proto := range []int{2, 3} {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: proto, DB: 1, Password: "pw", DisableIdentity: true, MaintNotificationsConfig: noMaint})
		if v, err := c.Get(ctx(t), "k").Result(); err != nil || v != "value of k" {
			t.Errorf("RESP%d GET: %q, %v", proto, v, err)
		}
		ps := c.Subscribe(ctx(t), "ch")
		if _, err := ps.Receive(ctx(t)); err != nil {
			t.Errorf("RESP%d SUBSCRIBE: %v", proto, err)
		}
		if err := ps.Ping(ctx(t), "x"); err != nil {
			t.Errorf("RESP%d PING while subscribed: %v", proto, err)
		}
		if m, err := ps.Receive(ctx(t)); err != nil || m.(*redis.Pong).Payload != "x" {
			t.Errorf("RESP%d pong: %v, %v", proto, m, err)
		}
		ps.Close()
		c.Close()
	}

	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{s.Addr}, DisableRoutingPolicies: true, MaintNotificationsConfig: noMaint})
	if v, err := cl.Get(ctx(t), "k").Result(); err != nil || v != "value of k" {
		t.Errorf("cluster GET: %q, %v", v, err)
	}
	cl.Close()

	master := Start(t, answerGet)
	s.Master = master.Addr
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{s.Addr}, DisableIdentity: true})
	if v, err := fc.Get(ctx(t), "k").Result(); err != nil || v != "value of k" {
		t.Errorf("sentinel GET: %q, %v", v, err)
	}
	fc.Close()
	t.Logf("sentinel saw %q", s.Commands())
	t.Logf("master saw %q", master.Commands())
}

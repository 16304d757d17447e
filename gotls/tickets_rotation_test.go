package gotls

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// fakeClock is the time of a daemon's key ring and of the Tickets that
// take keys from it, moved by the test instead of waited for.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestTicketRotation: with the shortest key lifetime the daemon allows
// (120s: a key encrypts for 60s and decrypts 60s more), the refresh that
// a server's Tickets schedule just after the key stops encrypting takes
// the new key, and tickets issued under the previous one still resume on
// either server. The daemon's ring and the servers share a clock that the
// test moves, so nothing waits for the key to expire.
func TestTicketRotation(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	const lifetime = 120 * time.Second
	srv := servertest.StartWith(t, "", func(c *server.Config) {
		keys, err := tktkey.NewManager(context.Background(), tktkey.Options{Timeout: lifetime, Rand: rand.Reader, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Keys = keys
	})
	d := Dial(Options{Socket: srv.Path, Timeout: 5 * time.Second})
	defer d.Close()
	var servers []*Tickets
	var addrs []string
	for range 2 {
		cfg := serverConfig(getCert(t).cert, tls.VersionTLS13)
		tk := shareTicketKeys(cfg, d, clock.Now)
		defer tk.Close()
		servers = append(servers, tk)
		addrs = append(addrs, startServer(t, cfg))
	}
	a, b := addrs[0], addrs[1]

	old := map[string]*ticketClient{}
	for _, v := range versions {
		old[v.name] = firstSession(t, v.v, a)
	}
	k1 := currentKey(t, srv.Path)

	for _, tk := range servers {
		wait := tk.untilRotation()
		untilExpiry := k1.ExpiryTime().Sub(clock.Now())
		if untilExpiry <= 0 || untilExpiry > lifetime/2 {
			t.Fatalf("the key encrypts for %v more, want (0, %v]", untilExpiry, lifetime/2)
		}
		if wait <= untilExpiry || wait > untilExpiry+time.Second+10*time.Millisecond {
			t.Fatalf("refresh scheduled in %v, want just after the key's expiry in %v", wait, untilExpiry)
		}
	}
	clock.Advance(servers[0].untilRotation())
	for i, tk := range servers {
		if err := tk.Refresh(context.Background()); err != nil {
			t.Fatalf("server %d: refresh at the rotation: %v", i, err)
		}
		if n := tk.Keys(); n != 2 {
			t.Fatalf("server %d has %d keys after the rotation, want the new one and the previous", i, n)
		}
	}
	if k2 := currentKey(t, srv.Path); k2.Name == k1.Name {
		t.Fatal("the daemon did not rotate")
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			if !old[v.name].connect(t, b) {
				t.Fatal("ticket under the previous key does not resume after the rotation")
			}
			c := firstSession(t, v.v, b)
			if !c.connect(t, a) {
				t.Fatal("ticket under the new key does not resume on the other server")
			}
		})
	}
}

// currentKey asks the daemon at socket for the key that encrypts now.
func currentKey(t *testing.T, socket string) proto.TicketKey {
	t.Helper()
	d := Dial(Options{Socket: socket, Timeout: 5 * time.Second})
	defer d.Close()
	var k proto.TicketKey
	tk := &Tickets{d: d}
	if err := tk.call(context.Background(), nil, &k); err != nil {
		t.Fatal(err)
	}
	return k
}

package gotls

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// TestTicketRetriesSoonAfterFailure: while the daemon is not there yet,
// Tickets asks again after a second, then waits twice as long each time,
// up to ticketRefreshMax: a daemon that comes up a little later has its
// keys taken within seconds, not a minute.
func TestTicketRetriesSoonAfterFailure(t *testing.T) {
	env := daemontest.NewEnv(t, daemontest.MemoryCaches)
	d := Dial(Options{Socket: env.Sock, Timeout: time.Second, Logger: (&logs{}).Logger()})
	t.Cleanup(func() { d.Close() })
	tk := ShareTicketKeys(serverConfig(getCert(t).cert, tls.VersionTLS13), d)
	t.Cleanup(func() { tk.Close() })
	if tk.Keys() != 0 {
		t.Fatal("keys with no daemon")
	}
	// The first retry, a second from now, fails too.
	for deadline := time.Now().Add(20 * time.Second); d.Stats().Calls < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls in 20s", d.Stats().Calls)
		}
	}
	env.Start(t, tlsmgrBin)
	// The next retries come 2, 6 and 14 seconds after that one.
	for deadline := time.Now().Add(30 * time.Second); tk.Keys() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no key 30s after the daemon came up (%d calls)", d.Stats().Calls)
		}
	}
}

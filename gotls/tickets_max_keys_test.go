package gotls

import (
	"context"
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"
)

// TestTicketKeysBounded: however many keys of its own a server made while
// the daemon was gone, crypto/tls is given at most ticketMaxKeys, by the
// fallbacks and by the refresh once the daemon is back (its new key and
// the newest of the server's own).
func TestTicketKeysBounded(t *testing.T) {
	dm := startDaemon(t)
	d := dm.dial(t, time.Second, &logs{})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	setClock := func(unix int64) { clock.Store(time.Unix(unix, 0).UnixNano()) }
	cfg := serverConfig(getCert(t).cert, tls.VersionTLS13)
	tk := shareTicketKeys(cfg, d, func() time.Time { return time.Unix(0, clock.Load()) })
	t.Cleanup(func() { tk.Close() })
	if tk.Keys() != 1 {
		t.Fatal("no key from the daemon")
	}
	tk.mu.Lock()
	expiry := tk.keys[0].expiry
	tk.mu.Unlock()

	dm.proc.Kill()
	// Each fallback past the last own key's expiry makes a new own key.
	for i := int64(1); i <= ticketMaxKeys+2; i++ {
		setClock(expiry + i*1_000_000)
		tk.fallBack()
		if n := tk.Keys(); n > ticketMaxKeys {
			t.Fatalf("after %d own keys: %d keys, more than %d", i, n, ticketMaxKeys)
		}
	}
	if n := tk.Keys(); n != ticketMaxKeys {
		t.Fatalf("%d keys after the fallbacks, want %d", n, ticketMaxKeys)
	}

	// Back, with every own key still decrypting.
	dm.proc = dm.env.Start(t, tlsmgrBin)
	setClock(time.Now().Unix())
	deadline := time.Now().Add(10 * time.Second)
	for tk.Refresh(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no refresh with the daemon back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	tk.mu.Lock()
	n, first := len(tk.keys), tk.keys[0]
	tk.mu.Unlock()
	if n != ticketMaxKeys || first.local {
		t.Fatalf("with the daemon back: %d keys (the first local: %v), want %d, the daemon's first", n, first.local, ticketMaxKeys)
	}
}

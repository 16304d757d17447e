package server

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// TestTicketKeysWithoutManager: a server given no ticket key manager
// answers tktkey requests as Postfix's tlsmgr does with tickets off:
// status ERR (not FAIL, which says the request was bad) and no key.
func TestTicketKeysWithoutManager(t *testing.T) {
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.Keys = nil })
	c := f.dial(t)
	c.send("request", "tktkey", "keyname", "").expect(err1 + " keybuf=")
	c.send("request", "tktkey", "keyname", b64("0123456789abcdef")).expect(err1 + " keybuf=")
	// A bad name is still a bad request.
	c.send("request", "tktkey", "keyname", b64("short")).expect(fail + " keybuf=")
}

// TestSeedAndMalformedCounted: the figures that stats requests and the
// metrics report count seed bytes handed out and every malformed
// request, an unknown request name included.
func TestSeedAndMalformedCounted(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	for _, n := range []string{"32", "7"} {
		c.send("request", "seed", "size", n).readList()
	}
	c.send("request", "seed", "size", "0").expect(fail + " seed=") // refused: not counted as bytes
	if got := f.stat("seed_bytes"); got != "39" {
		t.Errorf("seed_bytes = %s after seeds of 32 and 7 bytes, want 39", got)
	}
	// The bogus seed length above is one malformed request.
	c.send("request", "frobnicate").expect(fail)
	c.send("size", "1").expect(fail)
	if got := f.stat("requests_malformed"); got != "3" {
		t.Errorf("requests_malformed = %s after a bogus seed length, an unknown request and one without a name, want 3", got)
	}
}

// TestRequestTimeoutDefaultsToIPCTimeout: with no RequestTimeout, the
// rest of a begun request must come within the smaller of ipc_timeout and
// 10s: a short ipc_timeout is not stretched to 10s for a stalled client.
func TestRequestTimeoutDefaultsToIPCTimeout(t *testing.T) {
	const ipc = 300 * time.Millisecond
	f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
		c.IPCTimeout = ipc
		c.RequestTimeout = 0
	})
	c := f.dial(t)
	start := time.Now()
	if _, err := io.WriteString(c.nc, "request\x00lookup\x00"); err != nil { // and then nothing
		t.Fatal(err)
	}
	c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := c.br.ReadByte()
	elapsed := time.Since(start)
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("stalled client read %q, %v; want the connection closed", b, err)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("stalled request closed after %v; want about ipc_timeout (%v), not the 10s default", elapsed, ipc)
	}
	f.log.WaitFor(t, "not complete within 300ms")
}

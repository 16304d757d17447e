package daemon_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
)

// TestTicketKeyLifetimeFollowsSmtpd: ticket keys live for half of
// smtpd_tls_session_cache_timeout (as in Postfix), whatever the smtp and
// lmtp caches' timeouts are.
func TestTicketKeyLifetimeFollowsSmtpd(t *testing.T) {
	e := newEnv(t, memoryCaches)
	p := e.start(t,
		"smtpd_tls_session_cache_timeout=7200s",
		"smtp_tls_session_cache_timeout=600s",
		"lmtp_tls_session_cache_timeout=1200s")
	c := client.New(e.Sock, client.Options{Timeout: 5 * time.Second})
	defer c.Close()
	before := time.Now().Unix()
	k, err := c.TicketKey(context.Background(), nil)
	after := time.Now().Unix()
	if err != nil {
		t.Fatal(err)
	}
	// Expiry is now + T/2 - 1 with T the smtpd timeout.
	if lo, hi := before+3600-1, after+3600-1; k.Expiry < lo || k.Expiry > hi {
		t.Errorf("ticket key expires %d s from now, want %d (half the smtpd timeout, less 1)", k.Expiry-after, 3599)
	}
	p.Signal(t, syscall.SIGTERM)
	if st := p.Wait(t, 5*time.Second); st != 0 {
		t.Fatalf("exit status %d:\n%s", st, p.Stderr)
	}
}

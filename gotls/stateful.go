package gotls

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"

	"github.com/gotlsmgr/tlsmgr/client"
)

// IdentityLen is the length of the identities (TLS 1.2 tickets, TLS 1.3
// PSK identities) that SetStatefulSessions hands to clients.
const IdentityLen = 32

// SetStatefulSessions makes cfg keep session state in the daemon's cache
// of type cacheType (normally "smtpd") and hand clients only a random
// 32-byte identity for it: the state never leaves the operator's
// machines, and every server process using the daemon (every host, in
// fleet mode) resumes the sessions any of them made. It sets
// cfg.WrapSession and cfg.UnwrapSession.
//
// A daemon that is down or slow, or an entry this Go version cannot
// parse, is a miss and the handshake a full one. When the state cannot
// be stored, the client still gets a fresh identity (an empty one would
// end a TLS 1.3 handshake in Go's client); it is a miss when presented.
func SetStatefulSessions(cfg *tls.Config, d *Daemon, cacheType string) {
	cfg.WrapSession = func(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		identity := make([]byte, IdentityLen)
		rand.Read(identity) // never fails (crypto/rand, Go 1.24+)
		sb, err := ss.Bytes()
		if err != nil {
			return identity, nil
		}
		b := make([]byte, 0, 1+len(sb))
		b = append(append(b, formatV1), sb...)
		id := identityID(identity)
		d.do(func(ctx context.Context, cl *client.Client) error {
			return cl.Update(ctx, cacheType, id, b)
		})
		clear(sb) // the session's secrets; the daemon has them now
		clear(b)
		return identity, nil
	}
	cfg.UnwrapSession = func(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
		if len(identity) != IdentityLen {
			return nil, nil
		}
		var b []byte
		err := d.do(func(ctx context.Context, cl *client.Client) (err error) {
			b, err = cl.Lookup(ctx, cacheType, identityID(identity))
			return err
		})
		if err != nil || len(b) < 1 || b[0] != formatV1 {
			return nil, nil
		}
		ss, err := tls.ParseSessionState(b[1:])
		if err != nil {
			return nil, nil
		}
		return ss, nil
	}
}

// identityID is the cache_id of a session identity.
func identityID(identity []byte) string { return idPrefix + hex.EncodeToString(identity) }

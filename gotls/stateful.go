package gotls

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
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
// parse, is a miss and the handshake a full one. So is an entry that
// was not stored under the identity presented (a store that returns
// another key's value): each entry names its identity, since resuming
// another session's state fails the handshake (its PSK binder, or its
// Finished, does not verify) instead of falling back to a full one. When the state cannot
// be stored, the client still gets a fresh identity (an empty one would
// end a TLS 1.3 handshake in Go's client); it is a miss when presented.
//
// An identity resumes until its entry expires or is deleted, as Go's own
// tickets do; it is not single-use. RFC 8446 asks for single use against
// replayed 0-RTT data, which crypto/tls never accepts; a TLS 1.3
// resumption hands out a new identity anyway, and its key exchange is a
// fresh (EC)DHE (crypto/tls resumes only with psk_dhe_ke), so an entry
// obtained later opens no earlier connection's traffic. Deleting the entry
// on use would cost every TLS 1.3 resumption another call.
func SetStatefulSessions(cfg *tls.Config, d *Daemon, cacheType string) {
	// The identities of the last TLS 1.2 sessions unwrapped, by a digest
	// of their state, so that a resumption's re-issued ticket is the
	// same identity.
	var resumed recent[[sha256.Size]byte, []byte]
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		sb, err := ss.Bytes()
		if err == nil && cs.DidResume && cs.Version <= tls.VersionTLS12 {
			// TLS 1.2 re-issues the very state it resumed (same secret,
			// same creation time): hand back its identity, which the
			// daemon holds already, instead of storing it again.
			if identity, ok := resumed.take(sha256.Sum256(sb)); ok {
				clear(sb)
				return identity, nil
			}
		}
		identity := make([]byte, IdentityLen)
		rand.Read(identity) // never fails (crypto/rand, Go 1.24+)
		if err != nil {
			return identity, nil
		}
		b := make([]byte, 0, 1+IdentityLen+len(sb))
		b = append(append(append(b, serverFormatV2), identity...), sb...)
		id := identityID(identity)
		d.do(func(ctx context.Context, cl *client.Client) error {
			return cl.Update(ctx, cacheType, id, b)
		})
		clear(sb) // the session's secrets; the daemon has them now
		clear(b)
		return identity, nil
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		if len(identity) != IdentityLen {
			return nil, nil
		}
		var b []byte
		err := d.do(func(ctx context.Context, cl *client.Client) (err error) {
			b, err = cl.Lookup(ctx, cacheType, identityID(identity))
			return err
		})
		// Not cleared after: the state parsed may alias it.
		state, ok := boundState(b, identity)
		if err != nil || !ok {
			return nil, nil
		}
		ss, err := tls.ParseSessionState(state)
		if err != nil {
			return nil, nil
		}
		if cs.Version <= tls.VersionTLS12 {
			resumed.put(sha256.Sum256(state), bytes.Clone(identity))
		}
		return ss, nil
	}
}

// boundState returns the state of a server entry stored under identity;
// false for an entry of another identity, or of another format.
func boundState(b, identity []byte) ([]byte, bool) {
	if len(b) < 1+IdentityLen || b[0] != serverFormatV2 ||
		subtle.ConstantTimeCompare(b[1:1+IdentityLen], identity) != 1 {
		return nil, false
	}
	return b[1+IdentityLen:], true
}

// identityID is the cache_id of a session identity.
func identityID(identity []byte) string { return idPrefix + hex.EncodeToString(identity) }

package gotls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Entries are a format byte and then the format's fields. Version 2 of
// the server format is the identity the state is stored under (32
// bytes), then the SessionState's Bytes; version 1, the Bytes alone, is
// no longer taken (see SetStatefulSessions). Version 2 of the client
// format is the time it was stored (8 bytes, big-endian Unix seconds),
// the ticket, length-prefixed (4 bytes, big-endian), then the
// SessionState's Bytes; version 1 lacked the time.
const (
	formatV1       = 1
	clientFormatV2 = 2
	serverFormatV2 = 2
)

// clientRefreshAfter is how long the client cache may keep a ticket in
// place of the one a resumption of the same TLS 1.2 session brought:
// the server took the kept one moments ago, and any server rotates its
// ticket keys much less often than this.
const clientRefreshAfter = time.Minute

// idPrefix starts every cache_id the adapters use, keeping them apart
// from the ids Postfix's smtp and smtpd put in the same caches.
const idPrefix = "gotls:"

// maxKeyLen is the longest tls cache key used as it is; a longer one, or
// one with bytes other than printable ASCII, is hashed (see cacheID).
const maxKeyLen = 200

// cacheID is the daemon's cache_id for a crypto/tls client cache key:
// "gotls:" and the key when it is short, printable ASCII, else "gotls:#"
// and the hex SHA-256 of the key ('#' never starts a key used as it is,
// so the two kinds never meet).
func cacheID(key string) string {
	plain := len(key) > 0 && len(key) <= maxKeyLen && key[0] != '#'
	for i := 0; plain && i < len(key); i++ {
		plain = key[i] > 0x20 && key[i] < 0x7f
	}
	if plain {
		return idPrefix + key
	}
	sum := sha256.Sum256([]byte(key))
	return idPrefix + "#" + hex.EncodeToString(sum[:])
}

type clientCache struct {
	d         *Daemon
	cacheType string
	held      recent[string, heldEntry]
	now       func() time.Time
}

// NewClientSessionCache returns a tls.ClientSessionCache kept in the
// daemon's cache of type cacheType (normally "smtp" or "lmtp"), so that
// every client process using the daemon resumes the sessions any of them
// made. The daemon being down, slow or holding an entry this Go version
// cannot parse is a miss, and a Put it does not take is dropped: the
// handshake then is a full one.
//
// A Go TLS 1.2 server sends a new ticket on every resumption, for the
// same session. The cache does not store it when the entry it resumed
// from is less than a minute old, so a resumption costs one call to the
// daemon, not two.
func NewClientSessionCache(d *Daemon, cacheType string) tls.ClientSessionCache {
	c := &clientCache{d: d, cacheType: cacheType, now: time.Now}
	c.held.wipe = wipeHeld
	return c
}

func (c *clientCache) Get(key string) (*tls.ClientSessionState, bool) {
	id := cacheID(key)
	var b []byte
	err := c.d.do(func(ctx context.Context, cl *client.Client) (err error) {
		b, err = cl.Lookup(ctx, c.cacheType, id)
		return err
	})
	if err != nil {
		if errors.Is(err, client.ErrNotFound) {
			c.held.forget(id)
		}
		return nil, false
	}
	stored, ticket, sb, ok := decodeClient(b)
	if !ok {
		c.held.forget(id)
		return nil, false
	}
	// Whatever the daemon holds and this program cannot use (another Go
	// version's state) replaces what it held: Put must store again.
	state, err := tls.ParseSessionState(sb)
	if err != nil {
		c.held.forget(id)
		return nil, false
	}
	cs, err := tls.NewResumptionState(ticket, state)
	if err != nil {
		c.held.forget(id)
		return nil, false
	}
	c.held.put(id, heldEntry{bytes.Clone(sb), stored}) // stored 0 (version 1): old
	return cs, true
}

func (c *clientCache) Put(key string, cs *tls.ClientSessionState) {
	id := cacheID(key)
	if cs == nil {
		c.held.forget(id)
		c.d.do(func(ctx context.Context, cl *client.Client) error {
			return cl.Delete(ctx, c.cacheType, id) // nothing to delete is an answer
		})
		return
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || state == nil {
		return
	}
	sb, err := state.Bytes()
	if err != nil {
		return
	}
	defer clear(sb)
	now := c.now().Unix()
	since := now - int64(clientRefreshAfter/time.Second)
	if c.held.holds(id, func(e heldEntry) bool { return e.stored > since && sameSessionButTime(e.state, sb) }) {
		return // the entry the handshake resumed from holds this session
	}
	b := encodeClient(now, ticket, sb)
	defer clear(b)
	if c.d.do(func(ctx context.Context, cl *client.Client) error {
		return cl.Update(ctx, c.cacheType, id, b)
	}) == nil {
		c.held.put(id, heldEntry{bytes.Clone(sb), now})
	}
}

// sameSessionButTime reports whether two serialized session states differ
// at most within 8 consecutive bytes: the creation time, which a Go TLS
// 1.2 client sets anew when it resumes, while everything else (version,
// suite, the 48-byte master secret, certificates) is the same. Two
// sessions' master secrets differ in far more bytes, and a state from
// another Go version differs in its layout, so both are stored.
func sameSessionButTime(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	first, last := -1, -1
	for i := range a {
		if a[i] != b[i] {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return last-first < 8
}

func encodeClient(stored int64, ticket, state []byte) []byte {
	b := make([]byte, 0, 1+8+4+len(ticket)+len(state))
	b = append(b, clientFormatV2)
	b = binary.BigEndian.AppendUint64(b, uint64(stored))
	b = binary.BigEndian.AppendUint32(b, uint32(len(ticket)))
	b = append(b, ticket...)
	return append(b, state...)
}

// decodeClient parses an entry of either client format; stored is 0 for
// version 1.
func decodeClient(b []byte) (stored int64, ticket, state []byte, ok bool) {
	switch {
	case len(b) >= 1+8 && b[0] == clientFormatV2:
		stored = int64(binary.BigEndian.Uint64(b[1:9]))
		if stored <= 0 {
			return 0, nil, nil, false
		}
		b = b[9:]
	case len(b) >= 1 && b[0] == formatV1:
		b = b[1:]
	default:
		return 0, nil, nil, false
	}
	if len(b) < 4 {
		return 0, nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return 0, nil, nil, false
	}
	return stored, b[4 : 4+n], b[4+n:], true
}

// heldEntry is, for an id last looked up or stored here, a copy of the
// session state the daemon held (Go's session aliases the buffer it was
// parsed from) and when it was stored, so that Put can tell a
// resumption's re-issued session from a new one. Concurrent handshakes
// with one server share the id.
type heldEntry struct {
	state  []byte
	stored int64
}

func wipeHeld(e heldEntry) { clear(e.state) }

package gotls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Entries are a format byte and then the format's fields. Version 1 of
// the client format is the ticket, length-prefixed (4 bytes, big-endian),
// then the SessionState's Bytes; version 1 of the server format is the
// SessionState's Bytes alone.
const formatV1 = 1

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
}

// NewClientSessionCache returns a tls.ClientSessionCache kept in the
// daemon's cache of type cacheType (normally "smtp" or "lmtp"), so that
// every client process using the daemon resumes the sessions any of them
// made. The daemon being down, slow or holding an entry this Go version
// cannot parse is a miss, and a Put it does not take is dropped: the
// handshake then is a full one.
func NewClientSessionCache(d *Daemon, cacheType string) tls.ClientSessionCache {
	return &clientCache{d: d, cacheType: cacheType}
}

func (c *clientCache) Get(key string) (*tls.ClientSessionState, bool) {
	var b []byte
	err := c.d.do(func(ctx context.Context, cl *client.Client) (err error) {
		b, err = cl.Lookup(ctx, c.cacheType, cacheID(key))
		return err
	})
	if err != nil {
		return nil, false
	}
	ticket, sb, ok := decodeClient(b)
	if !ok {
		return nil, false
	}
	state, err := tls.ParseSessionState(sb)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(ticket, state)
	if err != nil {
		return nil, false
	}
	return cs, true
}

func (c *clientCache) Put(key string, cs *tls.ClientSessionState) {
	id := cacheID(key)
	if cs == nil {
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
	b := encodeClient(ticket, sb)
	c.d.do(func(ctx context.Context, cl *client.Client) error {
		return cl.Update(ctx, c.cacheType, id, b)
	})
}

func encodeClient(ticket, state []byte) []byte {
	b := make([]byte, 0, 1+4+len(ticket)+len(state))
	b = append(b, formatV1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ticket)))
	b = append(b, ticket...)
	return append(b, state...)
}

func decodeClient(b []byte) (ticket, state []byte, ok bool) {
	if len(b) < 5 || b[0] != formatV1 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) > uint64(len(b)-5) {
		return nil, nil, false
	}
	return b[5 : 5+n], b[5+n:], true
}

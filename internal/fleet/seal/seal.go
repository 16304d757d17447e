// Package seal keeps what tlsmgr puts in a shared store (Redis) unreadable
// to the store: values are sealed with AES-256-GCM, and ids (session cache
// ids, which for the smtp client name the destinations a host talks to)
// become keyed hashes before they are used in a store key.
//
// The keys come from seal_key_file, shared by every host of a fleet: the
// first seals, every one opens, so a key is rotated by adding a new first
// line on every host and removing the old line once everything sealed
// under it has expired.
//
// # Formats
//
// A sealed value is
//
//	version (1 byte, 1) || key id (4 bytes) || nonce (12 bytes) || ciphertext || tag (16 bytes)
//
// and its associated data is version || key id || aad, so the header is
// authenticated too. The caller's aad is the store key the value lives
// under, so a value copied or moved to another key does not open.
//
// Nonces are random (crypto/rand). NIST SP 800-38D bounds random 96-bit
// nonces to 2^32 seals per key; at a thousand seals a second that is over
// a century, and rotation resets the count.
//
// A name is the unpadded base64url encoding of HMAC-SHA256 of the id: 43
// characters from [A-Za-z0-9_-], which never contain a Redis Cluster hash
// tag ("{").
//
// # Derivation
//
// No seal key is used directly. Each is run through HKDF-SHA256 (RFC 5869)
// with the salt "tlsmgr seal v1" and expanded, with these info labels, into
// sub-keys of one purpose each:
//
//	"tlsmgr seal v1 aes-256-gcm"   32 bytes, the AES-256-GCM key
//	"tlsmgr seal v1 key id"         4 bytes, the key id in sealed values
//	"tlsmgr seal v1 id hmac"       32 bytes, the HMAC-SHA256 key of names
//
// These labels and formats are what hosts of a fleet must agree on: a
// change to any of them is a new version, never an edit.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
)

const (
	version  = 1
	idLen    = 4
	nonceLen = 12
	tagLen   = 16
	hdrLen   = 1 + idLen

	// Overhead is how many bytes sealing adds to a value.
	Overhead = hdrLen + nonceLen + tagLen

	// NameLen is the length of a name.
	NameLen = 43

	salt       = "tlsmgr seal v1"
	labelGCM   = "tlsmgr seal v1 aes-256-gcm"
	labelKeyID = "tlsmgr seal v1 key id"
	labelName  = "tlsmgr seal v1 id hmac"
	derivedLen = 32
)

// ErrOpen is wrapped by every failure to open a value. Callers treat it
// as a miss: the value may be from an older format, under a retired key,
// moved, or damaged.
var ErrOpen = errors.New("seal: cannot open value")

// ErrUnknownKey is an Open of a value sealed under a key that is not in
// the list (retired too early, or another fleet's). It wraps ErrOpen.
var ErrUnknownKey = fmt.Errorf("%w: sealed under a key not in seal_key_file", ErrOpen)

// ErrClosed is an Open after Close. It wraps ErrOpen.
var ErrClosed = fmt.Errorf("%w: sealer closed", ErrOpen)

// Made once: a flood of bogus values should not allocate errors.
var (
	errTruncated = fmt.Errorf("%w: too short", ErrOpen)
	errVersion   = fmt.Errorf("%w: unknown format version", ErrOpen)
	errAuth      = fmt.Errorf("%w: authentication failed", ErrOpen)
)

// subkeys are what one seal key expands into.
type subkeys struct {
	id      [idLen]byte
	gcmKey  []byte // kept only so that Close can zero it
	aead    cipher.AEAD
	nameKey []byte
	nameMAC keyedMAC
}

// keyedMAC is HMAC-SHA256 under one key. Cloning a keyed state skips
// hashing the key pads on every call, which halves the cost of a name.
type keyedMAC struct {
	key  []byte
	base hash.Cloner // nil if the hash cannot be cloned (GOFIPS140=v1.0.0)
}

func newKeyedMAC(key []byte) keyedMAC {
	c, _ := hmac.New(sha256.New, key).(hash.Cloner)
	return keyedMAC{key: key, base: c}
}

// sum appends the MAC of data to buf. Clone only reads base, so
// concurrent calls are safe.
func (m *keyedMAC) sum(data, buf []byte) []byte {
	var h hash.Hash
	if m.base != nil {
		if c, err := m.base.Clone(); err == nil {
			h = c
		}
	}
	if h == nil {
		h = hmac.New(sha256.New, m.key)
	}
	h.Write(data)
	return h.Sum(buf)
}

// Sealer seals and opens values and hashes ids under a list of seal keys.
// Its methods are safe for concurrent use, except Close.
type Sealer struct {
	keys   []subkeys // keys[0] seals
	closed bool
}

// New derives the sub-keys of keys, of which the first seals. The caller
// keeps keys and may zero them once New returns.
func New(keys [][32]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no seal key")
	}
	s := &Sealer{keys: make([]subkeys, 0, len(keys))}
	for i := range keys {
		for j := range i {
			if subtle.ConstantTimeCompare(keys[i][:], keys[j][:]) == 1 {
				s.Close()
				return nil, fmt.Errorf("seal: seal key %d repeats seal key %d", i+1, j+1)
			}
		}
		k, err := derive(&keys[i])
		if err != nil {
			s.Close()
			return nil, err
		}
		for j := range s.keys {
			// 2^-32 for a pair of random keys; refused rather than let
			// one key's values be tried, and fail, under the other.
			if s.keys[j].id == k.id {
				s.keys = append(s.keys, k)
				s.Close()
				return nil, fmt.Errorf("seal: seal keys %d and %d have the same key id; replace one", j+1, i+1)
			}
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

func derive(key *[32]byte) (subkeys, error) {
	var k subkeys
	prk, err := hkdf.Extract(sha256.New, key[:], []byte(salt))
	if err != nil {
		return k, fmt.Errorf("seal: %w", err)
	}
	defer clear(prk)
	expand := func(label string, n int) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = hkdf.Expand(sha256.New, prk, label, n)
		return b
	}
	k.gcmKey = expand(labelGCM, derivedLen)
	id := expand(labelKeyID, idLen)
	k.nameKey = expand(labelName, derivedLen)
	if err != nil {
		k.zero()
		return k, fmt.Errorf("seal: %w", err)
	}
	copy(k.id[:], id)
	clear(id)
	k.nameMAC = newKeyedMAC(k.nameKey)
	block, err := aes.NewCipher(k.gcmKey)
	if err == nil {
		k.aead, err = cipher.NewGCM(block)
	}
	if err != nil {
		k.zero()
		return k, fmt.Errorf("seal: %w", err)
	}
	return k, nil
}

func (k *subkeys) zero() {
	clear(k.gcmKey)
	clear(k.nameKey)
	clear(k.id[:])
	k.aead = nil
	k.nameMAC = keyedMAC{}
}

// Seal seals plaintext under the first key, bound to aad (the store key).
func (s *Sealer) Seal(aad, plaintext []byte) []byte {
	if s.closed {
		panic("seal: Seal after Close")
	}
	k := &s.keys[0]
	out := make([]byte, hdrLen+nonceLen, hdrLen+nonceLen+len(plaintext)+tagLen)
	out[0] = version
	copy(out[1:hdrLen], k.id[:])
	nonce := out[hdrLen : hdrLen+nonceLen]
	// Never fails: since Go 1.24 a failing system generator crashes the
	// program rather than return predictable bytes.
	rand.Read(nonce)
	return k.aead.Seal(out, nonce, plaintext, associated(out[:hdrLen], aad))
}

// Open verifies and opens a value from Seal under any of the keys. Every
// failure wraps ErrOpen and says nothing of the key or the contents.
func (s *Sealer) Open(aad, sealed []byte) ([]byte, error) {
	if s.closed {
		return nil, ErrClosed
	}
	if len(sealed) < Overhead {
		return nil, errTruncated
	}
	if sealed[0] != version {
		return nil, errVersion
	}
	k := s.byID(sealed[1:hdrLen])
	if k == nil {
		return nil, ErrUnknownKey
	}
	nonce := sealed[hdrLen : hdrLen+nonceLen]
	out, err := k.aead.Open(nil, nonce, sealed[hdrLen+nonceLen:], associated(sealed[:hdrLen], aad))
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}

// byID finds a key by id. The id is not secret (it is in every value), so
// the comparison need not be constant-time.
func (s *Sealer) byID(id []byte) *subkeys {
	for i := range s.keys {
		if string(s.keys[i].id[:]) == string(id) {
			return &s.keys[i]
		}
	}
	return nil
}

// associated is the GCM associated data: the header, then the caller's
// aad. The header has a fixed length, so the two cannot be confused.
func associated(hdr, aad []byte) []byte {
	b := make([]byte, 0, len(hdr)+len(aad))
	return append(append(b, hdr...), aad...)
}

// Names returns the name of id under each key, the sealing key's first.
// Writers use the first; readers try all, so that entries written before
// a rotation stay readable until they expire.
func (s *Sealer) Names(id string) []string {
	if s.closed {
		panic("seal: Names after Close")
	}
	names := make([]string, len(s.keys))
	var sum [sha256.Size]byte
	for i := range s.keys {
		names[i] = base64.RawURLEncoding.EncodeToString(s.keys[i].nameMAC.sum([]byte(id), sum[:0]))
	}
	return names
}

// Name is the name writers use: Names(id)[0].
func (s *Sealer) Name(id string) string {
	if s.closed {
		panic("seal: Name after Close")
	}
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(s.keys[0].nameMAC.sum([]byte(id), sum[:0]))
}

// Close zeroes the sub-keys the Sealer holds; afterwards Open fails with
// ErrClosed and the other methods panic. It must not run concurrently with
// other methods.
//
// Zeroing in Go is best effort. What Close reaches is the derived key
// bytes this package allocated. It cannot reach the AES key schedule and
// GHASH tables inside crypto/aes and crypto/cipher, the keyed HMAC
// states inside crypto/hmac (dropped, not zeroed) and their clones that
// became garbage, copies the runtime made when it moved
// a goroutine stack, or the raw seal keys (the caller's, in
// settings.Settings.SealKeys). Those stay in memory until reused, and
// reach swap or a core dump if the system writes them. The experimental
// runtime/secret package (GOEXPERIMENT=runtimesecret) would cover some of
// this; it is not used while it is outside the compatibility promise.
func (s *Sealer) Close() {
	for i := range s.keys {
		s.keys[i].zero()
	}
	s.closed = true
}

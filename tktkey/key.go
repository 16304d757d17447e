// Package tktkey manages RFC 5077 session ticket keys the way Postfix's
// tlsmgr does: a current key that encrypts for T/2 and the previous key
// that still decrypts for another T/2.
package tktkey

import (
	"encoding/binary"
	"errors"
	"time"
)

// Sizes of the parts of a key, as in Postfix's TLS_TICKET_KEY.
const (
	NameLen    = 16
	AESKeyLen  = 32
	HMACKeyLen = 32
	// RecordLen is the size of the record sent in a tktkey reply: the C
	// struct as laid out on 64-bit little-endian hosts.
	RecordLen = NameLen + AESKeyLen + HMACKeyLen + 8
)

// Key is one ticket key. It is secret: never log it, and Wipe it when it
// is retired.
type Key struct {
	Name   [NameLen]byte
	AES    [AESKeyLen]byte
	HMAC   [HMACKeyLen]byte
	Expiry int64 // seconds since the epoch; encrypts until then
}

// ExpiryTime is Expiry as a time.Time.
func (k *Key) ExpiryTime() time.Time { return time.Unix(k.Expiry, 0) }

// Marshal returns the 88-byte wire record.
func (k *Key) Marshal() []byte {
	b := make([]byte, RecordLen)
	k.MarshalTo(b)
	return b
}

// MarshalTo writes the wire record into b, which must hold RecordLen bytes.
func (k *Key) MarshalTo(b []byte) {
	_ = b[RecordLen-1]
	n := copy(b, k.Name[:])
	n += copy(b[n:], k.AES[:])
	n += copy(b[n:], k.HMAC[:])
	binary.LittleEndian.PutUint64(b[n:], uint64(k.Expiry))
}

// Unmarshal parses a wire record.
func Unmarshal(b []byte) (Key, error) {
	var k Key
	if len(b) != RecordLen {
		return k, errors.New("tktkey: record is not 88 bytes")
	}
	n := copy(k.Name[:], b)
	n += copy(k.AES[:], b[n:])
	n += copy(k.HMAC[:], b[n:])
	k.Expiry = int64(binary.LittleEndian.Uint64(b[n:]))
	return k, nil
}

// Wipe overwrites the key material.
func (k *Key) Wipe() { *k = Key{} }

// Ring is the pair of keys the daemon keeps. Current is nil until the
// first ticket is issued; Previous is nil until the first rotation.
type Ring struct {
	Current  *Key
	Previous *Key
}

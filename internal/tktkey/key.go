// Package tktkey manages RFC 5077 session ticket keys the way Postfix's
// tlsmgr does: a current key that encrypts for T/2 and the previous key
// that still decrypts for another T/2.
package tktkey

import (
	"encoding/binary"
	"fmt"
	"strconv"
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
	// RecordLen211 is the record of Postfix 2.11, whose tickets used
	// AES-128 and a 16-byte HMAC key.
	RecordLen211 = NameLen + 16 + 16 + 8
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
func (k *Key) MarshalTo(b []byte) { k.MarshalLayout(b[:RecordLen]) }

// MarshalLayout writes the wire record in the layout of its length:
// RecordLen, or RecordLen211, which holds the first 16 bytes of each key
// (the same name then always stands for the same shorter keys).
func (k *Key) MarshalLayout(b []byte) {
	keyLen := keyLen(len(b))
	if keyLen == 0 {
		panic("tktkey: no record layout is " + strconv.Itoa(len(b)) + " bytes long")
	}
	n := copy(b, k.Name[:])
	n += copy(b[n:], k.AES[:keyLen])
	n += copy(b[n:], k.HMAC[:keyLen])
	binary.LittleEndian.PutUint64(b[n:], uint64(k.Expiry))
}

// keyLen is the length of the AES and HMAC keys in a record of n bytes,
// 0 for no known layout.
func keyLen(n int) int {
	switch n {
	case RecordLen:
		return AESKeyLen
	case RecordLen211:
		return 16
	}
	return 0
}

// Unmarshal parses a wire record of either layout. The keys of a 2.11
// record fill the first 16 bytes of AES and HMAC, the rest zero.
func Unmarshal(b []byte) (Key, error) {
	var k Key
	keyLen := keyLen(len(b))
	if keyLen == 0 {
		return k, fmt.Errorf("tktkey: a record is %d or %d bytes, not %d", RecordLen, RecordLen211, len(b))
	}
	n := copy(k.Name[:], b)
	n += copy(k.AES[:keyLen], b[n:])
	n += copy(k.HMAC[:keyLen], b[n:])
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

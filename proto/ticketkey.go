package proto

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// Sizes of a ticket key's parts and of the record a tktkey reply carries
// in its keybuf attribute, as Postfix's TLS_TICKET_KEY lays them out
// (tls.h: TLS_TICKET_NAMELEN, TLS_TICKET_KEYLEN, TLS_TICKET_MACLEN).
const (
	TicketNameLen = 16
	TicketKeyLen  = 32 // AES-256
	TicketMACLen  = 32 // HMAC-SHA256
	// TicketKeyRecordLen is the size of the record: the C struct as laid
	// out on 64-bit little-endian hosts.
	TicketKeyRecordLen = TicketNameLen + TicketKeyLen + TicketMACLen + 8
	// TicketKeyRecordLen211 is the record of Postfix 2.11, whose tickets
	// used AES-128 and a 16-byte HMAC key.
	TicketKeyRecordLen211 = TicketNameLen + 16 + 16 + 8
)

// TicketKey is one RFC 5077 session ticket key as tlsmgr hands it out. It
// is secret: never log it, and Wipe it when it is retired.
type TicketKey struct {
	Name   [TicketNameLen]byte
	AES    [TicketKeyLen]byte
	HMAC   [TicketMACLen]byte
	Expiry int64 // seconds since the epoch; encrypts until then
}

// ExpiryTime is Expiry as a time.Time.
func (k *TicketKey) ExpiryTime() time.Time { return time.Unix(k.Expiry, 0) }

// Marshal returns the 88-byte wire record.
func (k *TicketKey) Marshal() []byte {
	b := make([]byte, TicketKeyRecordLen)
	k.MarshalTo(b)
	return b
}

// MarshalTo writes the wire record into b, which must hold
// TicketKeyRecordLen bytes.
func (k *TicketKey) MarshalTo(b []byte) { k.MarshalLayout(b[:TicketKeyRecordLen]) }

// MarshalLayout writes the wire record in the layout of its length:
// TicketKeyRecordLen, or TicketKeyRecordLen211, which holds the first 16
// bytes of each key (the same name then always stands for the same
// shorter keys).
func (k *TicketKey) MarshalLayout(b []byte) {
	keyLen := ticketKeyLen(len(b))
	if keyLen == 0 {
		panic("proto: no ticket key record layout is " + strconv.Itoa(len(b)) + " bytes long")
	}
	n := copy(b, k.Name[:])
	n += copy(b[n:], k.AES[:keyLen])
	n += copy(b[n:], k.HMAC[:keyLen])
	binary.LittleEndian.PutUint64(b[n:], uint64(k.Expiry))
}

// ticketKeyLen is the length of the AES and HMAC keys in a record of n
// bytes, 0 for no known layout.
func ticketKeyLen(n int) int {
	switch n {
	case TicketKeyRecordLen:
		return TicketKeyLen
	case TicketKeyRecordLen211:
		return 16
	}
	return 0
}

// ParseTicketKey parses a wire record of either layout. The keys of a
// 2.11 record fill the first 16 bytes of AES and HMAC, the rest zero.
func ParseTicketKey(b []byte) (TicketKey, error) {
	var k TicketKey
	keyLen := ticketKeyLen(len(b))
	if keyLen == 0 {
		return k, fmt.Errorf("proto: a ticket key record is %d or %d bytes, not %d", TicketKeyRecordLen, TicketKeyRecordLen211, len(b))
	}
	n := copy(k.Name[:], b)
	n += copy(k.AES[:keyLen], b[n:])
	n += copy(k.HMAC[:keyLen], b[n:])
	k.Expiry = int64(binary.LittleEndian.Uint64(b[n:]))
	return k, nil
}

// Wipe overwrites the key material.
func (k *TicketKey) Wipe() { *k = TicketKey{} }

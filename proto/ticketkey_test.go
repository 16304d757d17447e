package proto

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func sampleKey() TicketKey {
	var k TicketKey
	for i := range k.Name {
		k.Name[i] = byte(0x01 + i)
	}
	for i := range k.AES {
		k.AES[i] = byte(0x20 + i)
	}
	for i := range k.HMAC {
		k.HMAC[i] = byte(0x60 + i)
	}
	k.Expiry = 0x0102030405060708
	return k
}

func TestRecordLen(t *testing.T) {
	if TicketKeyRecordLen != 88 {
		t.Fatalf("TicketKeyRecordLen = %d, want 88", TicketKeyRecordLen)
	}
}

func TestMarshalLayout(t *testing.T) {
	k := sampleKey()
	b := k.Marshal()
	if len(b) != 88 {
		t.Fatalf("Marshal gave %d bytes, want 88", len(b))
	}
	if !bytes.Equal(b[0:16], k.Name[:]) {
		t.Errorf("bytes 0-15 = %x, want the name %x", b[0:16], k.Name)
	}
	if !bytes.Equal(b[16:48], k.AES[:]) {
		t.Errorf("bytes 16-47 = %x, want the AES key %x", b[16:48], k.AES)
	}
	if !bytes.Equal(b[48:80], k.HMAC[:]) {
		t.Errorf("bytes 48-79 = %x, want the HMAC key %x", b[48:80], k.HMAC)
	}
	if want := []byte{8, 7, 6, 5, 4, 3, 2, 1}; !bytes.Equal(b[80:88], want) {
		t.Errorf("bytes 80-87 = %x, want little-endian expiry %x", b[80:88], want)
	}

	// A negative expiry is a signed 64-bit value.
	k.Expiry = -2
	b = k.Marshal()
	if want := []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; !bytes.Equal(b[80:], want) {
		t.Errorf("expiry -2 encodes as %x, want %x", b[80:], want)
	}

	// MarshalTo writes the same record into the caller's buffer.
	buf := make([]byte, 100)
	for i := range buf {
		buf[i] = 0xAA
	}
	k = sampleKey()
	k.MarshalTo(buf)
	if !bytes.Equal(buf[:88], k.Marshal()) {
		t.Errorf("MarshalTo wrote %x, want %x", buf[:88], k.Marshal())
	}
	if !bytes.Equal(buf[88:], bytes.Repeat([]byte{0xAA}, 12)) {
		t.Errorf("MarshalTo wrote past the record: %x", buf[88:])
	}
}

func TestMarshalToShortBufferPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MarshalTo into 87 bytes did not panic")
		}
	}()
	k := sampleKey()
	k.MarshalTo(make([]byte, 87))
}

func TestParseTicketKeyRoundTrip(t *testing.T) {
	for _, exp := range []int64{0, 1, 1_700_000_000, -1, 1<<63 - 1, -1 << 63} {
		k := sampleKey()
		k.Expiry = exp
		got, err := ParseTicketKey(k.Marshal())
		if err != nil {
			t.Fatalf("ParseTicketKey: %v", err)
		}
		if got != k {
			t.Errorf("round trip of expiry %d: got %+v, want %+v", exp, got, k)
		}
	}
	// Unmarshal of a hand-built record.
	rec := make([]byte, 88)
	rec[0], rec[15], rec[16], rec[47], rec[48], rec[79] = 1, 2, 3, 4, 5, 6
	rec[80], rec[87] = 0x10, 0x80
	k, err := ParseTicketKey(rec)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name[0] != 1 || k.Name[15] != 2 || k.AES[0] != 3 || k.AES[31] != 4 || k.HMAC[0] != 5 || k.HMAC[31] != 6 {
		t.Errorf("fields misplaced: %+v", k)
	}
	if want := int64(-0x7ffffffffffffff0); k.Expiry != want {
		t.Errorf("Expiry = %#x, want %#x", k.Expiry, want)
	}
}

func TestParseTicketKeyRejectsWrongLength(t *testing.T) {
	k := sampleKey()
	good := k.Marshal()
	for _, n := range []int{0, 1, 16, 80, 87, 89, 96, 176} {
		b := make([]byte, n)
		copy(b, good)
		if _, err := ParseTicketKey(b); err == nil {
			t.Errorf("ParseTicketKey accepted %d bytes", n)
		}
	}
	if _, err := ParseTicketKey(nil); err == nil {
		t.Error("ParseTicketKey accepted nil")
	}
}

func TestExpiryTimeAndWipe(t *testing.T) {
	k := sampleKey()
	k.Expiry = 1_700_000_000
	if got := k.ExpiryTime(); !got.Equal(time.Unix(1_700_000_000, 0)) {
		t.Errorf("ExpiryTime = %v", got)
	}
	k.Wipe()
	if k != (TicketKey{}) {
		t.Errorf("Wipe left %+v", k)
	}
}

// TestRecord211 checks Postfix 2.11's 56-byte layout: name, the first 16
// bytes of the AES and HMAC keys, expiry; and that it reads back.
func TestRecord211(t *testing.T) {
	k := sampleKey()
	rec := make([]byte, TicketKeyRecordLen211)
	k.MarshalLayout(rec)
	if len(rec) != 56 ||
		!bytes.Equal(rec[:16], k.Name[:]) || !bytes.Equal(rec[16:32], k.AES[:16]) ||
		!bytes.Equal(rec[32:48], k.HMAC[:16]) ||
		binary.LittleEndian.Uint64(rec[48:]) != uint64(k.Expiry) {
		t.Fatalf("2.11 record % x", rec)
	}
	back, err := ParseTicketKey(rec)
	if err != nil {
		t.Fatal(err)
	}
	if back.Name != k.Name || !bytes.Equal(back.AES[:16], k.AES[:16]) || [16]byte(back.AES[16:]) != [16]byte{} ||
		!bytes.Equal(back.HMAC[:16], k.HMAC[:16]) || [16]byte(back.HMAC[16:]) != [16]byte{} || back.Expiry != k.Expiry {
		t.Errorf("2.11 record read back as %+v", back)
	}
	full := make([]byte, TicketKeyRecordLen)
	k.MarshalLayout(full)
	if !bytes.Equal(full, k.Marshal()) {
		t.Error("MarshalLayout of 88 bytes differs from Marshal")
	}
}

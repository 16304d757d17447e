package gotls

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// TestDeriveTicketKeyKnownAnswer pins the derivation: servers of two
// releases share tickets only if they derive the same key from the same
// daemon key. It is HKDF-SHA256 (RFC 5869) with the AES and HMAC keys as
// the secret, the key name as the salt and TicketKeyInfo as the info,
// computed here from HMAC alone, and a fixed answer besides.
func TestDeriveTicketKeyKnownAnswer(t *testing.T) {
	var k proto.TicketKey
	for i := range k.Name {
		k.Name[i] = byte(i)
	}
	for i := range k.AES {
		k.AES[i] = byte(0x40 + i)
	}
	for i := range k.HMAC {
		k.HMAC[i] = byte(0x80 + i)
	}
	mac := func(key []byte, parts ...[]byte) []byte {
		h := hmac.New(sha256.New, key)
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum(nil)
	}
	prk := mac(k.Name[:], k.AES[:], k.HMAC[:]) // extract: salt keys the HMAC
	okm := mac(prk, []byte(TicketKeyInfo), []byte{1})
	got := DeriveTicketKey(&k)
	if hex.EncodeToString(got[:]) != hex.EncodeToString(okm) {
		t.Fatalf("DeriveTicketKey = %x, HKDF-SHA256 gives %x", got, okm)
	}
	const want = "50f4dcca60bded25c65a091bdda4ea8b49415a566950471e1923216f62473fc6"
	if hex.EncodeToString(got[:]) != want {
		t.Errorf("DeriveTicketKey = %x, want %s (a changed derivation breaks ticket sharing between releases)", got, want)
	}
}

package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

// Where the HMAC state cannot be cloned (GOFIPS140=v1.0.0), names are
// the same keyed HMAC-SHA256, computed from the key.
func TestKeyedMACWithoutClone(t *testing.T) {
	key := hkdfByHand(keyA, labelName, derivedLen)
	cloned := newKeyedMAC(key)
	plain := keyedMAC{key: key} // no clonable state, as in FIPS 140 mode
	for _, data := range [][]byte{nil, []byte("mx.example.com:25"), bytes.Repeat([]byte{0xa5}, 200)} {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		want := m.Sum(nil)
		if got := plain.sum(data, nil); !bytes.Equal(got, want) {
			t.Errorf("without a clonable state, MAC of %d bytes: %x, want %x", len(data), got, want)
		}
		if got := cloned.sum(data, nil); !bytes.Equal(got, want) {
			t.Errorf("from the cloned state, MAC of %d bytes: %x, want %x", len(data), got, want)
		}
		// It appends to buf, as the callers expect.
		if got := plain.sum(data, []byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("sum does not append to its buffer: %x", got)
		}
	}
	// The Sealer gives the same names either way.
	s := newSealer(t, keyA)
	name := s.Name("mx.example.com:25")
	s.keys[0].nameMAC.base = nil
	if got := s.Name("mx.example.com:25"); got != name || got != goldenName {
		t.Errorf("Name without a clonable state %s, with one %s, want %s", got, name, goldenName)
	}
}

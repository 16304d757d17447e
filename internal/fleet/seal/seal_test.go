package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func testKey(b byte) [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

var keyA, keyB, keyC = testKey(0x00), testKey(0x40), testKey(0x80)

func newSealer(t testing.TB, keys ...[32]byte) *Sealer {
	t.Helper()
	s, err := New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hkdfByHand is RFC 5869 written out with HMAC, so that the documented
// derivation is checked independently of crypto/hkdf.
func hkdfByHand(key [32]byte, info string, n int) []byte {
	m := hmac.New(sha256.New, []byte(salt))
	m.Write(key[:])
	prk := m.Sum(nil)
	var out, t []byte
	for c := byte(1); len(out) < n; c++ {
		m = hmac.New(sha256.New, prk)
		m.Write(t)
		m.Write([]byte(info))
		m.Write([]byte{c})
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	for _, n := range []int{0, 1, 15, 16, 17, 88, 1024, 65536} {
		for _, aad := range [][]byte{nil, []byte("tlsmgr:smtpd:x")} {
			pt := make([]byte, n)
			rand.Read(pt)
			sealed := s.Seal(aad, pt)
			if len(sealed) != n+Overhead {
				t.Errorf("%d bytes sealed to %d, want %d", n, len(sealed), n+Overhead)
			}
			got, err := s.Open(aad, sealed)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%d bytes, aad %q: Open = %x, %v", n, aad, got, err)
			}
		}
	}
}

// The format of the package comment, rebuilt by hand: another
// implementation following it must interoperate.
func TestFormatAsDocumented(t *testing.T) {
	s := newSealer(t, keyA)
	gcmKey := hkdfByHand(keyA, "tlsmgr seal v1 aes-256-gcm", 32)
	id := hkdfByHand(keyA, "tlsmgr seal v1 key id", 4)
	block, _ := aes.NewCipher(gcmKey)
	aead, _ := cipher.NewGCM(block)
	aad := []byte("tlsmgr:tkt:abc")
	pt := []byte("a session")

	// What Seal makes, opened by hand.
	sealed := s.Seal(aad, pt)
	if sealed[0] != 1 || !bytes.Equal(sealed[1:5], id) {
		t.Fatalf("header %x, want 01%x", sealed[:5], id)
	}
	hdr := sealed[:5]
	got, err := aead.Open(nil, sealed[5:17], sealed[17:], append(append([]byte{}, hdr...), aad...))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("by hand: %q, %v", got, err)
	}

	// What a hand makes, opened by Open.
	nonce := bytes.Repeat([]byte{7}, 12)
	byHand := append(append([]byte{1}, id...), nonce...)
	byHand = aead.Seal(byHand, nonce, pt, append(append([]byte{1}, id...), aad...))
	if got, err := s.Open(aad, byHand); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open of a hand-made value: %q, %v", got, err)
	}

	// Names too.
	m := hmac.New(sha256.New, hkdfByHand(keyA, "tlsmgr seal v1 id hmac", 32))
	m.Write([]byte("mx.example.com:25"))
	if got, want := s.Name("mx.example.com:25"), base64.RawURLEncoding.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("Name %s, want %s", got, want)
	}
}

// Fixed values: hosts of a fleet running different versions must agree
// on names and open each other's values, so any change here is a format
// change.
func TestGoldenValues(t *testing.T) {
	s := newSealer(t, keyA)
	if got, want := hex.EncodeToString(s.keys[0].id[:]), goldenID; got != want {
		t.Errorf("key id %s, want %s", got, want)
	}
	if got := s.Name("mx.example.com:25"); got != goldenName {
		t.Errorf("Name %s, want %s", got, goldenName)
	}
	sealed, _ := hex.DecodeString(goldenSealed)
	if got, err := s.Open([]byte("tlsmgr:k"), sealed); err != nil || string(got) != "golden" {
		t.Errorf("golden value: %q, %v", got, err)
	}
}

const (
	goldenID     = "b723be69"
	goldenName   = "ajiL7GBKukToCaRCQjHqzqSWDjx9KPgG3jOfBraDz_0"
	goldenSealed = "01b723be6978982df77074eb7570e169340c973223365a07073ff1c624334648b90ea4c0ef32a9"
)

func TestWrongAAD(t *testing.T) {
	s := newSealer(t, keyA)
	sealed := s.Seal([]byte("tlsmgr:smtpd:k1"), []byte("value"))
	for _, aad := range []string{"tlsmgr:smtpd:k2", "tlsmgr:smtpd:k", "tlsmgr:smtpd:k1\x00", "", "TLSMGR:smtpd:k1"} {
		if _, err := s.Open([]byte(aad), sealed); !errors.Is(err, ErrOpen) {
			t.Errorf("opened under aad %q: %v", aad, err)
		}
	}
}

func TestBitFlips(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	aad := []byte("tlsmgr:k")
	sealed := s.Seal(aad, []byte("sixty-four bytes of session state, more or less, to be flipped."))
	for i := range len(sealed) * 8 {
		c := bytes.Clone(sealed)
		c[i/8] ^= 1 << (i % 8)
		if got, err := s.Open(aad, c); !errors.Is(err, ErrOpen) || got != nil {
			t.Fatalf("bit %d flipped: %q, %v", i, got, err)
		}
	}
}

func TestTruncatedOrExtended(t *testing.T) {
	s := newSealer(t, keyA)
	sealed := s.Seal(nil, []byte("value"))
	for n := range len(sealed) {
		if _, err := s.Open(nil, sealed[:n]); !errors.Is(err, ErrOpen) {
			t.Fatalf("opened %d of %d bytes: %v", n, len(sealed), err)
		}
	}
	if _, err := s.Open(nil, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrOpen) {
		t.Errorf("opened with a byte appended: %v", err)
	}
	if _, err := s.Open(nil, sealed[:Overhead-1]); err != errTruncated {
		t.Errorf("short value: %v, want %v", err, errTruncated)
	}
}

func TestWrongVersion(t *testing.T) {
	s := newSealer(t, keyA)
	sealed := s.Seal(nil, []byte("value"))
	for _, v := range []byte{0, 2, 0xff} {
		c := bytes.Clone(sealed)
		c[0] = v
		if _, err := s.Open(nil, c); err != errVersion {
			t.Errorf("version %d: %v, want %v", v, err, errVersion)
		}
	}
}

// The rotation of the package comment: B seals; then A is added first
// (A seals, B still opens); then B is removed.
func TestRotation(t *testing.T) {
	before := newSealer(t, keyB)
	during := newSealer(t, keyA, keyB)
	after := newSealer(t, keyA)
	aad := []byte("tlsmgr:k")
	old := before.Seal(aad, []byte("old"))
	if got, err := during.Open(aad, old); err != nil || string(got) != "old" {
		t.Fatalf("value sealed under B, opened under [A, B]: %q, %v", got, err)
	}
	if _, err := after.Open(aad, old); !errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrOpen) {
		t.Errorf("value sealed under B, opened under [A]: %v, want ErrUnknownKey", err)
	}
	fresh := during.Seal(aad, []byte("new"))
	if got, err := after.Open(aad, fresh); err != nil || string(got) != "new" {
		t.Errorf("[A, B] must seal under A: %q, %v", got, err)
	}
	if _, err := before.Open(aad, fresh); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("[A, B] sealed under B: %v", err)
	}
	// The names follow: what B wrote is found by the second name.
	if before.Name("id") != during.Names("id")[1] || after.Name("id") != during.Name("id") {
		t.Errorf("names do not follow the rotation")
	}
}

func TestNames(t *testing.T) {
	s := newSealer(t, keyA, keyB, keyC)
	names := s.Names("mx.example.com:25")
	want := []string{
		newSealer(t, keyA).Name("mx.example.com:25"),
		newSealer(t, keyB).Name("mx.example.com:25"),
		newSealer(t, keyC).Name("mx.example.com:25"),
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("Names %q, want %q (one per key, in key order)", names, want)
	}
	if s.Name("mx.example.com:25") != names[0] {
		t.Errorf("Name is not Names[0]")
	}
	if again := newSealer(t, keyA, keyB, keyC).Names("mx.example.com:25"); strings.Join(again, " ") != strings.Join(names, " ") {
		t.Errorf("names not stable: %q then %q", names, again)
	}
	if rev := newSealer(t, keyC, keyB, keyA).Names("mx.example.com:25"); rev[0] != names[2] || rev[2] != names[0] {
		t.Errorf("reversed keys: %q, from %q", rev, names)
	}
	seen := map[string]bool{}
	for _, id := range []string{"", "a", "b", "mx.example.com:25", "mx.example.com:26", "mx.example.com:25\x00"} {
		for _, n := range s.Names(id) {
			if len(n) != NameLen || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
				t.Errorf("name %q of %q: want %d base64url characters", n, id, NameLen)
			}
			if seen[n] {
				t.Errorf("name %q repeated", n)
			}
			seen[n] = true
		}
	}
}

// No id, value, store key or key byte shows through, over many random
// inputs.
func TestNothingShowsThrough(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	var secrets [][]byte
	for _, k := range [][32]byte{keyA, keyB} {
		secrets = append(secrets, bytes.Clone(k[:]))
	}
	for i := range s.keys {
		secrets = append(secrets, s.keys[i].gcmKey, s.keys[i].nameKey)
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 2000 {
		in := make([]byte, 8+r.IntN(100))
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		aad := make([]byte, 8+r.IntN(40))
		for i := range aad {
			aad[i] = byte(r.Uint32())
		}
		sealed := s.Seal(aad, in)
		if bytes.Contains(sealed, in) || bytes.Contains(sealed, aad) {
			t.Fatalf("input shows in sealed value")
		}
		names := strings.Join(s.Names(string(in)), "")
		for _, enc := range []string{string(in), hex.EncodeToString(in), base64.RawURLEncoding.EncodeToString(in), base64.StdEncoding.EncodeToString(in)[:8]} {
			if strings.Contains(names, enc) {
				t.Fatalf("id shows in names: %q in %q", enc, names)
			}
		}
		for _, k := range secrets {
			for j := 0; j+8 <= len(k); j += 8 {
				if bytes.Contains(sealed, k[j:j+8]) || strings.Contains(names, string(k[j:j+8])) {
					t.Fatalf("key material shows in output")
				}
			}
		}
	}
}

func TestNonces(t *testing.T) {
	s := newSealer(t, keyA)
	seen := map[string]bool{}
	var first []byte
	for i := range 10000 {
		sealed := s.Seal([]byte("k"), []byte("same input"))
		nonce := string(sealed[hdrLen : hdrLen+nonceLen])
		if seen[nonce] {
			t.Fatalf("nonce repeated after %d seals", i)
		}
		seen[nonce] = true
		if i == 0 {
			first = sealed
		} else if bytes.Equal(sealed[hdrLen+nonceLen:], first[hdrLen+nonceLen:]) {
			t.Fatalf("two seals of the same input have the same ciphertext")
		}
	}
}

// Each purpose has its own key, none of them the seal key.
func TestSubkeysDistinct(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	var all [][]byte
	for _, k := range [][32]byte{keyA, keyB} {
		all = append(all, bytes.Clone(k[:]))
	}
	for i := range s.keys {
		k := &s.keys[i]
		all = append(all, k.gcmKey, k.nameKey)
		if len(k.gcmKey) != 32 || len(k.nameKey) != 32 {
			t.Fatalf("sub-key lengths %d %d", len(k.gcmKey), len(k.nameKey))
		}
	}
	for i := range all {
		for j := range i {
			if bytes.Equal(all[i], all[j]) {
				t.Errorf("keys %d and %d are equal", i, j)
			}
		}
	}
	if s.keys[0].id == s.keys[1].id {
		t.Errorf("two keys with one id")
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(nil); err == nil || err.Error() != "seal: no seal key" {
		t.Errorf("New(nil): %v", err)
	}
	if _, err := New([][32]byte{keyA, keyB, keyA}); err == nil || err.Error() != "seal: seal key 3 repeats seal key 1" {
		t.Errorf("repeated key: %v", err)
	}
}

// Two distinct keys whose 32-bit ids collide are refused. A collision is
// found by the birthday bound in about 2^16 tries, from a fixed sequence
// of keys so that the test takes the same time on every run.
func TestKeyIDCollision(t *testing.T) {
	if testing.Short() {
		t.Skip("searches about 77000 keys")
	}
	seen := map[[4]byte][32]byte{}
	for i := uint64(0); ; i++ {
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], i)
		k := sha256.Sum256(seed[:])
		var id [4]byte
		copy(id[:], hkdfByHand(k, labelKeyID, 4))
		if other, ok := seen[id]; ok {
			_, err := New([][32]byte{other, k})
			if err == nil || err.Error() != "seal: seal keys 1 and 2 have the same key id; replace one" {
				t.Fatalf("colliding ids: %v", err)
			}
			return
		}
		seen[id] = k
	}
}

func TestClose(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	sealed := s.Seal(nil, []byte("value"))
	s.Close()
	for i := range s.keys {
		k := &s.keys[i]
		for _, b := range [][]byte{k.gcmKey, k.nameKey, k.id[:]} {
			if !bytes.Equal(b, make([]byte, len(b))) {
				t.Errorf("key %d: sub-key not zeroed: %x", i, b)
			}
		}
		if k.aead != nil || k.nameMAC.base != nil {
			t.Errorf("key %d: cipher or MAC state still held", i)
		}
	}
	if _, err := s.Open(nil, sealed); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrOpen) {
		t.Errorf("Open after Close: %v", err)
	}
	for name, f := range map[string]func(){
		"Seal":  func() { s.Seal(nil, nil) },
		"Name":  func() { s.Name("x") },
		"Names": func() { s.Names("x") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s after Close did not panic", name)
				}
			}()
			f()
		}()
	}
}

// Errors say what failed, never anything of the key or the value.
func TestErrorTexts(t *testing.T) {
	s := newSealer(t, keyA)
	other := newSealer(t, keyB)
	sealed := s.Seal([]byte("k"), []byte("the secret value"))
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	for _, c := range []struct {
		sealed []byte
		want   string
	}{
		{sealed[:3], "seal: cannot open value: too short"},
		{append([]byte{9}, sealed[1:]...), "seal: cannot open value: unknown format version"},
		{other.Seal([]byte("k"), []byte("the secret value")), "seal: cannot open value: sealed under a key not in seal_key_file"},
		{bad, "seal: cannot open value: authentication failed"},
	} {
		if _, err := s.Open([]byte("k"), c.sealed); err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newSealer(t, keyA, keyB)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				aad := []byte{byte(g), byte(i)}
				v := []byte(strings.Repeat("v", i))
				got, err := s.Open(aad, s.Seal(aad, v))
				if err != nil || !bytes.Equal(got, v) {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				if names := s.Names(string(aad)); len(names) != 2 || names[0] != s.Name(string(aad)) {
					t.Errorf("goroutine %d: names %q", g, names)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkSeal1K(b *testing.B) {
	s := newSealer(b, keyA, keyB)
	aad := []byte("tlsmgr:smtpd:" + strings.Repeat("x", NameLen))
	v := make([]byte, 1024)
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		s.Seal(aad, v)
	}
}

func BenchmarkOpen1K(b *testing.B) {
	s := newSealer(b, keyA, keyB)
	aad := []byte("tlsmgr:smtpd:" + strings.Repeat("x", NameLen))
	v := make([]byte, 1024)
	sealed := s.Seal(aad, v)
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := s.Open(aad, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkName(b *testing.B) {
	s := newSealer(b, keyA, keyB)
	for b.Loop() {
		s.Name("mx.example.com:25")
	}
}

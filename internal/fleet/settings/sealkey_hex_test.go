package settings

import (
	"reflect"
	"strings"
	"testing"
)

// A key line is hex digits only, in either case: the characters next to
// the digit ranges in ASCII are refused, and every digit decodes to its
// value.
func TestSealKeyHexDigits(t *testing.T) {
	f := newFixture(t)
	text := "servers = r:1\nseal_key_file = @KEY@\n"
	const prefix = "@DIR@/tlsmgr-redis.cf, line 2: seal_key_file: @DIR@/seal.key"
	for _, c := range []string{"/", ":", "@", "G", "`", "g", "Z", "z", "\x7f", "\xff"} {
		for _, at := range []int{0, 31, 63} {
			line := keyAHex[:at] + c + keyAHex[at+1:]
			writeFile(t, f.keyFile, line+"\n", 0o600)
			want := prefix + ", line 1: a key is 64 hex digits, this line has other characters"
			if got := f.loadErr(t, text); got != want {
				t.Errorf("%q at %d:\n got %s\nwant %s", c, at, got, want)
			}
		}
	}
	// Every digit, both cases.
	const digits = "0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcdef1234"
	writeFile(t, f.keyFile, digits+"\n"+strings.ToLower(digits[32:])+strings.ToUpper(digits[:32])+"\n", 0o600)
	s := f.load(t, text)
	want := [][32]byte{
		mustKey(strings.ToLower(digits)),
		mustKey(strings.ToLower(digits[32:] + digits[:32])),
	}
	if !reflect.DeepEqual(s.SealKeys, want) {
		t.Errorf("keys %x, want %x", s.SealKeys, want)
	}
}

package seal

import "testing"

// A seal key listed twice is named as a repetition, whichever two lines
// repeat: next to each other too, where the key ids are also equal and
// could be mistaken for a collision of ids.
func TestNewNamesRepeatedKey(t *testing.T) {
	for _, c := range []struct {
		keys [][32]byte
		want string
	}{
		{[][32]byte{keyA, keyA}, "seal: seal key 2 repeats seal key 1"},
		{[][32]byte{keyB, keyA, keyA}, "seal: seal key 3 repeats seal key 2"},
		{[][32]byte{keyA, keyB, keyC, keyC}, "seal: seal key 4 repeats seal key 3"},
		{[][32]byte{keyA, keyB, keyB, keyA}, "seal: seal key 3 repeats seal key 2"},
		{[][32]byte{keyA, keyB, keyC, keyA}, "seal: seal key 4 repeats seal key 1"},
	} {
		s, err := New(c.keys)
		if err == nil || err.Error() != c.want {
			t.Errorf("New of %d keys: %v, %v; want %q", len(c.keys), s, err, c.want)
		}
	}
}

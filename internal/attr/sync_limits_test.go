package attr

import (
	"bytes"
	"strings"
	"testing"
)

// TestOverLimitThenEmptyValueKeepsSync: after a name over the limits,
// the skip to the end of the list reads that name's value first, and an
// empty value there is a value, not the end of the list; the next list
// is still read whole.
func TestOverLimitThenEmptyValueKeepsSync(t *testing.T) {
	lim := Limits{MaxName: 16, MaxValue: 32, MaxList: 1000, MaxAttrs: 3, MaxDiscard: 10000}
	good := Encode("request", "seed", "size", "8")
	cases := map[string]string{
		"long name, empty value":         Encode(strings.Repeat("n", 17), "", "after", "1", "more", "2"),
		"attribute past MaxAttrs, empty": Encode("a", "1", "b", "2", "c", "3", "d", "", "e", "5", "f", "6"),
	}
	for name, bad := range cases {
		r := NewReader(strings.NewReader(bad+good), lim)
		if _, err := r.ReadList(); err != ErrTooLarge {
			t.Fatalf("%s: err = %v, want ErrTooLarge", name, err)
		}
		l, err := r.ReadList()
		if err != nil || len(l) != 2 || string(l[0].Name) != "request" || string(l[0].Value) != "seed" {
			t.Fatalf("%s: next list = %q, %v; want the request after it (stream out of sync)", name, l, err)
		}
	}
}

// TestWriterRejectsNULAnywhere: a NUL anywhere in a name or string value,
// first byte and last included, would end the field (or the list) early
// on the wire: the writer refuses it and writes nothing.
func TestWriterRejectsNULAnywhere(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"cache_id", "\x00abc"},
		{"cache_id", "abc\x00"},
		{"cache_id", "\x00"},
		{"\x00cache_id", "abc"},
		{"cache_id\x00", "abc"},
	} {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.Str(c.name, c.value)
		w.End()
		if err := w.Flush(); err != ErrNUL {
			t.Fatalf("Str(%q, %q): err = %v, want ErrNUL", c.name, c.value, err)
		}
		if bytes.Count(buf.Bytes(), []byte{0}) != 0 {
			t.Fatalf("Str(%q, %q) wrote %q despite the error", c.name, c.value, buf.Bytes())
		}
	}
}

package attr

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadList feeds arbitrary bytes to the reader with small limits. It
// must never panic, never return more than the limits allow, and every list
// it returns must survive a write/read round trip unchanged.
func FuzzReadList(f *testing.F) {
	f.Add([]byte(Encode("request", "seed", "size", "32")))
	f.Add([]byte(Encode("request", "update", "cache_type", "smtpd", "cache_id", "x", "session", "AAEC/w==")))
	f.Add([]byte("W"))
	f.Add([]byte("\x00\x00\x00"))
	lim := Limits{MaxName: 8, MaxValue: 24, MaxList: 64, MaxAttrs: 4, MaxDiscard: 512}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), lim)
		for {
			l, err := r.ReadList()
			if err == ErrTooLarge {
				continue
			}
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && err != ErrOutOfSync {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(l) > lim.MaxAttrs {
				t.Fatalf("%d attributes > limit", len(l))
			}
			var buf bytes.Buffer
			w := NewWriter(&buf)
			total := 1
			for _, a := range l {
				if len(a.Name) == 0 || len(a.Name) > lim.MaxName || len(a.Value) > lim.MaxValue {
					t.Fatalf("attribute out of bounds: %q=%q", a.Name, a.Value)
				}
				total += len(a.Name) + len(a.Value) + 2
				w.Str(string(a.Name), string(a.Value))
			}
			if total > lim.MaxList {
				t.Fatalf("list of %d bytes > limit", total)
			}
			w.End()
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			again, err := NewReader(&buf, lim).ReadList()
			if err != nil || len(again) != len(l) {
				t.Fatalf("round trip: %v, %d vs %d attributes", err, len(again), len(l))
			}
			for i := range l {
				if !bytes.Equal(again[i].Name, l[i].Name) || !bytes.Equal(again[i].Value, l[i].Value) {
					t.Fatalf("round trip changed attribute %d", i)
				}
			}
			// Typed decoders must fail cleanly, never panic.
			for _, a := range l {
				_, ierr := ParseInt("n", a.Value)
				_, derr := ParseData("d", a.Value)
				var se *SyntaxError
				if ierr != nil && !errors.As(ierr, &se) || derr != nil && !errors.As(derr, &se) {
					t.Fatalf("decoder error of the wrong type: %v %v", ierr, derr)
				}
			}
		}
	})
}

package attr

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadListSequence(t *testing.T) {
	in := Encode("request", "lookup", "cache_type", "smtpd", "cache_id", "abc&s=smtp") +
		Encode("request", "seed", "size", "32")
	r := NewReader(strings.NewReader(in), Limits{})
	l, err := r.ReadList()
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 3 || string(l[0].Name) != "request" || string(l[2].Value) != "abc&s=smtp" {
		t.Fatalf("first list = %q", l)
	}
	if v, ok := l.Get("cache_type"); !ok || string(v) != "smtpd" {
		t.Fatalf("Get(cache_type) = %q, %v", v, ok)
	}
	l, err = r.ReadList()
	if err != nil || len(l) != 2 || string(l[1].Value) != "32" {
		t.Fatalf("second list = %q, %v", l, err)
	}
	if _, err := r.ReadList(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestEmptyList(t *testing.T) {
	r := NewReader(strings.NewReader("\x00"), Limits{})
	l, err := r.ReadList()
	if err != nil || len(l) != 0 {
		t.Fatalf("got %q, %v", l, err)
	}
}

func TestUnexpectedEOFAndPartial(t *testing.T) {
	for _, in := range []string{"W", "W\x00", "request\x00seed\x00size"} {
		r := NewReader(strings.NewReader(in), Limits{})
		if _, err := r.ReadList(); err != io.ErrUnexpectedEOF {
			t.Fatalf("%q: err = %v", in, err)
		}
		if r.Partial() != len(in) {
			t.Fatalf("%q: Partial = %d", in, r.Partial())
		}
	}
}

func TestLimitsKeepStreamInSync(t *testing.T) {
	lim := Limits{MaxName: 16, MaxValue: 32, MaxList: 100, MaxAttrs: 3, MaxDiscard: 10000}
	good := Encode("request", "seed", "size", "8")
	cases := map[string]string{
		"long value":      Encode("request", "update", "session", strings.Repeat("A", 33)),
		"long name":       Encode(strings.Repeat("n", 17), "x"),
		"long first name": Encode(strings.Repeat("n", 5000), "x"),
		"too many attrs":  Encode("a", "1", "b", "2", "c", "3", "d", "4", "e", "5"),
		"long list":       Encode("a", strings.Repeat("x", 32), "b", strings.Repeat("x", 32), "c", strings.Repeat("x", 32)),
	}
	for name, bad := range cases {
		r := NewReader(strings.NewReader(bad+good), lim)
		if _, err := r.ReadList(); err != ErrTooLarge {
			t.Fatalf("%s: err = %v, want ErrTooLarge", name, err)
		}
		l, err := r.ReadList()
		if err != nil || string(l[0].Value) != "seed" {
			t.Fatalf("%s: next list = %q, %v (stream out of sync)", name, l, err)
		}
	}
}

func TestDiscardLimit(t *testing.T) {
	lim := Limits{MaxValue: 10, MaxDiscard: 1000}
	in := "name\x00" + strings.Repeat("x", 5000)
	r := NewReader(strings.NewReader(in), lim)
	if _, err := r.ReadList(); err != ErrOutOfSync {
		t.Fatalf("err = %v, want ErrOutOfSync", err)
	}
	// An endless stream without NULs is cut off too.
	r = NewReader(io.LimitReader(zeroFree{}, 1<<30), lim)
	if _, err := r.ReadList(); err != ErrOutOfSync {
		t.Fatalf("endless: err = %v, want ErrOutOfSync", err)
	}
}

// TestDiscardCountsFromTheLimit: the discard bound counts what is skipped
// past a broken limit, so it never cuts a list within limits larger than
// itself, and still bounds what an over-limit list makes the reader skip.
func TestDiscardCountsFromTheLimit(t *testing.T) {
	lim := Limits{MaxValue: 8 << 20, MaxList: 8 << 20} // MaxDiscard: the default 4 MiB
	good := Encode("request", "seed", "size", "8")
	big := strings.Repeat("A", 5<<20)
	r := NewReader(strings.NewReader(Encode("request", "update", "session", big)+good), lim)
	if l, err := r.ReadList(); err != nil || len(l) != 2 || len(l[1].Value) != len(big) {
		t.Fatalf("5 MiB list within 8 MiB limits: %d attributes, %v", len(l), err)
	}
	// 1 MiB over the limit: skipped, and the stream stays in sync.
	over := strings.Repeat("A", 9<<20)
	r = NewReader(strings.NewReader(Encode("session", over)+good), lim)
	if _, err := r.ReadList(); err != ErrTooLarge {
		t.Fatalf("9 MiB value: %v, want ErrTooLarge", err)
	}
	if l, err := r.ReadList(); err != nil || string(l[0].Value) != "seed" {
		t.Fatalf("after the 9 MiB value: %q, %v", l, err)
	}
	// More than MaxDiscard past the limit: given up on.
	r = NewReader(io.LimitReader(zeroFree{}, 13<<20), lim)
	if _, err := r.ReadList(); err != ErrOutOfSync {
		t.Fatalf("13 MiB without a NUL: %v, want ErrOutOfSync", err)
	}
	if r.Partial() > 8<<20+4<<20+16<<10 {
		t.Fatalf("read %d bytes before giving up, more than MaxList+MaxDiscard", r.Partial())
	}
}

type zeroFree struct{}

func (zeroFree) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}

func TestLargeValueWithinLimit(t *testing.T) {
	v := strings.Repeat("Q", 60000) // bigger than the bufio buffer
	r := NewReader(strings.NewReader(Encode("session", v)), Limits{})
	l, err := r.ReadList()
	if err != nil || string(l[0].Value) != v {
		t.Fatalf("err = %v, len = %d", err, len(l[0].Value))
	}
}

func TestParseInt(t *testing.T) {
	good := map[string]int32{"0": 0, "32": 32, "255": 255, "4294967295": -1, "4294967294": -2, "2147483648": -2147483648}
	for in, want := range good {
		got, err := ParseInt("size", []byte(in))
		if err != nil || got != want {
			t.Errorf("ParseInt(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "+1", " 1", "1 ", "1x", "0x10", "4294967296", "99999999999999999999"} {
		_, err := ParseInt("size", []byte(in))
		var se *SyntaxError
		if !errors.As(err, &se) || se.Name != "size" {
			t.Errorf("ParseInt(%q) err = %v, want SyntaxError", in, err)
		}
	}
}

// Integers go as Postfix prints them: their unsigned 32-bit value.
func TestWriterInt(t *testing.T) {
	for v, want := range map[int32]string{0: "0", -1: "4294967295", -2: "4294967294", 120: "120"} {
		var b bytes.Buffer
		w := NewWriter(&b)
		w.Int("status", v)
		w.End()
		if err := w.Flush(); err != nil || b.String() != "status\x00"+want+"\x00\x00" {
			t.Errorf("Int(%d) wrote %q, %v; want the value %q", v, b.String(), err, want)
		}
	}
}

func TestParseData(t *testing.T) {
	for in, want := range map[string]string{"": "", "AA==": "\x00", "aGVsbG8=": "hello"} {
		got, err := ParseData("session", []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("ParseData(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"A", "AA=", "aGVsbG8", "aGVs\nbG8=", "a-b_", "!!!!", "AA==AA=="} {
		if _, err := ParseData("session", []byte(in)); err == nil {
			t.Errorf("ParseData(%q) accepted", in)
		}
	}
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Int("status", -1)
	w.Data("session", []byte{0, 1, 2, 0xff})
	w.Str("protocol", "tlsmgr_protocol")
	w.End()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "status\x004294967295\x00session\x00AAEC/w==\x00protocol\x00tlsmgr_protocol\x00\x00"
	if buf.String() != want {
		t.Fatalf("wire = %q\nwant  %q", buf.String(), want)
	}
}

func TestEncode(t *testing.T) {
	if got, want := Encode("request", "seed", "size", "32"), "request\x00seed\x00size\x0032\x00\x00"; got != want {
		t.Fatalf("Encode = %q, want %q", got, want)
	}
	if got := Encode(); got != "\x00" {
		t.Fatalf("Encode() = %q, want the empty list", got)
	}
	// Values go as given: no check that a status is a number.
	if got, want := Encode("status", "zero"), "status\x00zero\x00\x00"; got != want {
		t.Fatalf("Encode = %q, want %q", got, want)
	}
	for name, pairs := range map[string][]string{
		"odd":          {"request"},
		"NUL in value": {"cache_id", "a\x00b"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			Encode(pairs...)
		}()
	}
}

func TestWriterRejectsNUL(t *testing.T) {
	w := NewWriter(io.Discard)
	w.Str("cache_id", "a\x00b")
	w.End()
	if err := w.Flush(); err != ErrNUL {
		t.Fatalf("err = %v, want ErrNUL", err)
	}
}

func BenchmarkReadList(b *testing.B) {
	one := Encode("request", "lookup", "cache_type", "smtpd", "cache_id", strings.Repeat("ab", 40)+"&s=smtp&l=805306672")
	in := strings.Repeat(one, 1000)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for i := 0; i < b.N; {
		r := NewReader(strings.NewReader(in), Limits{})
		for j := 0; j < 1000 && i < b.N; j, i = j+1, i+1 {
			if _, err := r.ReadList(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

package attr

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"strconv"
	"strings"
)

// ErrNUL is reported by Writer.Flush when a name or string value held a NUL
// byte, which the encoding cannot carry.
var ErrNUL = errors.New("attribute name or string value contains a NUL byte")

// Writer writes attribute lists. Errors are sticky and reported by Flush.
type Writer struct {
	bw      *bufio.Writer
	scratch []byte
	err     error
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 4<<10)}
}

// Str writes a string attribute.
func (w *Writer) Str(name, value string) {
	w.field(name)
	w.field(value)
}

// Int writes an integer attribute as Postfix does (unsigned decimal).
func (w *Writer) Int(name string, v int32) {
	w.field(name)
	if w.err == nil {
		w.scratch = strconv.AppendUint(w.scratch[:0], uint64(uint32(v)), 10)
		w.scratch = append(w.scratch, 0)
		_, w.err = w.bw.Write(w.scratch)
	}
}

// Data writes a binary attribute, base64-encoded.
func (w *Writer) Data(name string, b []byte) {
	w.field(name)
	if w.err == nil {
		n := base64.StdEncoding.EncodedLen(len(b))
		if cap(w.scratch) < n+1 {
			w.scratch = make([]byte, n+1)
		}
		s := w.scratch[:n+1]
		base64.StdEncoding.Encode(s, b)
		s[n] = 0
		_, w.err = w.bw.Write(s)
	}
}

// End terminates the list.
func (w *Writer) End() {
	if w.err == nil {
		w.err = w.bw.WriteByte(0)
	}
}

// Flush sends everything written so far.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	w.err = w.bw.Flush()
	return w.err
}

// Encode returns the list name, value, ... as Writer.Str sends it: each
// value as given, so a caller can also send values a reader must reject.
// It is for fixed lists, and panics on an odd number of strings or a NUL
// in one (ErrNUL).
func Encode(pairs ...string) string {
	if len(pairs)%2 != 0 {
		panic("attr: Encode of an odd number of strings")
	}
	var b strings.Builder
	w := NewWriter(&b)
	for i := 0; i < len(pairs); i += 2 {
		w.Str(pairs[i], pairs[i+1])
	}
	w.End()
	if err := w.Flush(); err != nil {
		panic(err)
	}
	return b.String()
}

func (w *Writer) field(s string) {
	if w.err != nil {
		return
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			w.err = ErrNUL
			return
		}
	}
	if _, w.err = w.bw.WriteString(s); w.err == nil {
		w.err = w.bw.WriteByte(0)
	}
}

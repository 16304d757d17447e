// Package attr implements Postfix's "attr0" wire encoding, the attribute
// lists that tlsmgr and its clients exchange: each attribute is NAME NUL
// VALUE NUL, and a list ends with one more NUL (an empty name).
//
// The Reader is strict and bounded: no client can make it allocate more than
// the configured limits, and a list that breaks a limit is skipped to its
// end so the connection stays usable whenever that is possible.
package attr

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Limits bound what one list may hold.
type Limits struct {
	MaxName  int // bytes in one attribute name
	MaxValue int // bytes in one attribute value (as sent, i.e. base64 text)
	MaxList  int // bytes in a whole list, NULs included
	MaxAttrs int // attributes in one list
	// MaxDiscard is how many bytes of an over-limit list the reader will
	// skip looking for its end before it gives up on the stream, counted
	// from where the list broke a limit: it never cuts a list that is
	// within the other limits, however large they are.
	MaxDiscard int
}

// DefaultLimits hold real sessions (a few KiB, more with a peer
// certificate chain) with room to spare.
var DefaultLimits = Limits{
	MaxName:    256,
	MaxValue:   64 << 10,
	MaxList:    256 << 10,
	MaxAttrs:   32,
	MaxDiscard: 4 << 20,
}

// Errors returned by ReadList.
var (
	// ErrTooLarge: the list broke a limit; it was skipped to its end and
	// the stream is in sync, so the caller may answer and go on.
	ErrTooLarge = errors.New("attribute list exceeds the size limits")
	// ErrOutOfSync: the list broke a limit and did not end within
	// MaxDiscard bytes; the stream cannot be used any more.
	ErrOutOfSync = errors.New("attribute list does not end within the discard limit")
)

// Attr is one attribute. Name and Value point into the Reader's buffer and
// are valid only until the next ReadList.
type Attr struct {
	Name  []byte
	Value []byte
}

// List is one attribute list in wire order.
type List []Attr

// Get returns the value of the first attribute called name.
func (l List) Get(name string) ([]byte, bool) {
	for _, a := range l {
		if string(a.Name) == name {
			return a.Value, true
		}
	}
	return nil, false
}

// Reader reads attribute lists from a stream.
type Reader struct {
	br   *bufio.Reader
	lim  Limits
	buf  []byte   // names and values of the current list, NUL-free
	offs [][2]int // start,end in buf of each name then value
	list List
	read int // bytes of the current list consumed so far
	// overAt is where in the current list it broke a limit (the start of
	// the chunk that did), or -1: discarding is counted from there.
	overAt int
}

// NewReader returns a Reader with the given limits; zero fields of lim take
// the DefaultLimits value.
func NewReader(r io.Reader, lim Limits) *Reader {
	return NewBufferedReader(bufio.NewReaderSize(r, 16<<10), lim)
}

// NewBufferedReader is NewReader for a caller that keeps the bufio.Reader,
// e.g. to peek at the first bytes of a connection.
func NewBufferedReader(br *bufio.Reader, lim Limits) *Reader {
	d := DefaultLimits
	if lim.MaxName <= 0 {
		lim.MaxName = d.MaxName
	}
	if lim.MaxValue <= 0 {
		lim.MaxValue = d.MaxValue
	}
	if lim.MaxList <= 0 {
		lim.MaxList = d.MaxList
	}
	if lim.MaxAttrs <= 0 {
		lim.MaxAttrs = d.MaxAttrs
	}
	if lim.MaxDiscard <= 0 {
		lim.MaxDiscard = d.MaxDiscard
	}
	return &Reader{br: br, lim: lim}
}

// Partial reports how many bytes of an unfinished list were consumed by the
// last ReadList that failed with io.ErrUnexpectedEOF. The server uses it to
// recognise master(8)'s one-byte wakeup trigger.
func (r *Reader) Partial() int { return r.read }

// ReadList reads the next list. It returns io.EOF when the stream ends
// cleanly between lists, io.ErrUnexpectedEOF when it ends inside one,
// ErrTooLarge or ErrOutOfSync when a limit is broken, or a read error.
func (r *Reader) ReadList() (List, error) {
	if cap(r.buf) > releaseAbove {
		r.buf = nil // an idle connection should not pin a big buffer
	}
	r.buf = r.buf[:0]
	r.offs = r.offs[:0]
	r.read = 0
	r.overAt = -1
	for {
		start := len(r.buf)
		n, over, err := r.readField(r.lim.MaxName)
		if err != nil {
			return nil, r.endOfStream(err)
		}
		if n == 0 && !over {
			break
		}
		if over || len(r.offs)/2 >= r.lim.MaxAttrs {
			return nil, r.skipRest(true)
		}
		r.offs = append(r.offs, [2]int{start, len(r.buf)})
		start = len(r.buf)
		if _, over, err = r.readField(r.lim.MaxValue); err != nil {
			return nil, r.endOfStream(err)
		}
		if over {
			return nil, r.skipRest(false)
		}
		r.offs = append(r.offs, [2]int{start, len(r.buf)})
	}
	r.list = r.list[:0]
	for i := 0; i < len(r.offs); i += 2 {
		n, v := r.offs[i], r.offs[i+1]
		r.list = append(r.list, Attr{Name: r.buf[n[0]:n[1]:n[1]], Value: r.buf[v[0]:v[1]:v[1]]})
	}
	return r.list, nil
}

// readField consumes one NUL-terminated field and appends it (without the
// NUL) to r.buf, unless it is over max or takes the list over MaxList: then
// the field is consumed but not kept, and over is true.
func (r *Reader) readField(max int) (n int, over bool, err error) {
	for {
		chunk, err := r.br.ReadSlice(0)
		start := r.read
		r.read += len(chunk)
		if err == nil {
			chunk = chunk[:len(chunk)-1]
		}
		n += len(chunk)
		if !over && (n > max || r.read > r.lim.MaxList) {
			over = true
		}
		if over && r.overAt < 0 {
			r.overAt = start
		}
		if r.overAt >= 0 && r.read-r.overAt > r.lim.MaxDiscard {
			return n, true, ErrOutOfSync
		}
		if !over {
			r.grow(len(chunk))
			r.buf = append(r.buf, chunk...)
		}
		switch err {
		case nil:
			return n, over, nil
		case bufio.ErrBufferFull:
			continue
		default:
			return n, over, err
		}
	}
}

// releaseAbove is the buffer capacity a Reader keeps between lists.
const releaseAbove = 16 << 10

// grow makes room for n more bytes without ever exceeding MaxList, which
// append's doubling would.
func (r *Reader) grow(n int) {
	need := len(r.buf) + n
	if need <= cap(r.buf) {
		return
	}
	c := min(max(2*cap(r.buf), need, 512), r.lim.MaxList)
	b := make([]byte, len(r.buf), c)
	copy(b, r.buf)
	r.buf = b
}

// skipRest consumes the rest of an over-limit list, up to and including
// the empty name that ends it, so that the stream stays in sync.
func (r *Reader) skipRest(nextIsValue bool) error {
	for {
		n, _, err := r.readField(-1)
		if err != nil {
			return r.endOfStream(err)
		}
		if !nextIsValue && n == 0 {
			return ErrTooLarge
		}
		nextIsValue = !nextIsValue
	}
}

func (r *Reader) endOfStream(err error) error {
	if err == io.EOF {
		if r.read == 0 {
			return io.EOF
		}
		return io.ErrUnexpectedEOF
	}
	return err
}

// SyntaxError describes a value that is not of the expected type.
type SyntaxError struct {
	Name  string
	Value string // at most 64 bytes of it, for the log
	Why   string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("attribute %s: %s: %q", e.Name, e.Why, e.Value)
}

func syntaxError(name string, value []byte, why string) error {
	v := value
	if len(v) > 64 {
		v = v[:64]
	}
	return &SyntaxError{Name: name, Value: string(v), Why: why}
}

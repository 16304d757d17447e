// Package respguard bounds what a Redis connection may deliver, beneath
// the client library: a net.Conn wrapper that follows the RESP2/RESP3
// framing of the bytes as they pass through Read and fails the Read,
// closing the connection, at the first header or line that breaks a
// bound or the protocol. The client library then sees a broken connection
// instead of the header, so it never sizes an allocation, a recursion or
// a line buffer from what the server announced.
//
// go-redis (v9.23.0, internal/proto/reader.go) trusts the server: it makes
// a slice of the announced length for a bulk string (make([]byte, n+2): a
// length of 2^63-1 panics, 2^40 aborts the runtime out of memory) and for
// an array, set or push; it sizes a map by the announced pair count; it
// accumulates a line until it ends, however long; and it recurses once per
// level of nesting, until the stack limit aborts the runtime. None of this
// is an error it can return: the process dies, and every member of a fleet
// sharing one Redis dies with it, at start-up again.
//
// The guard never changes, delays or copies a byte of a valid stream: Read
// scans the bytes the wrapped connection returned, in place, and returns
// them as they are. Its state is a few integers and a stack of at most
// Limits.Depth open aggregates; a bulk payload costs one subtraction
// whatever its length, a line one bytes.IndexByte.
//
// The framing followed is go-redis's, which it must match exactly: if the
// two disagreed about where a payload ends, the guard would pass headers as
// payload. Where go-redis's own readers disagree with each other (an
// attribute inside an attribute: ReadReply's Discard takes it for a map,
// ReadRawReply for an attribute followed by a value), the guard refuses.
// Anything that is not RESP as Redis sends it is refused as well: an
// unknown type byte, a length that is not decimal digits or -1, a line not
// ended by CRLF, a bulk payload not followed by CRLF, streamed (?) lengths.
package respguard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Limits bounds one connection's replies. Every field must be positive.
type Limits struct {
	// Bulk bounds the payload of a bulk string ($), blob error (!) or
	// verbatim string (=), in bytes.
	Bulk int
	// Count bounds the elements one aggregate announces: an array (*),
	// set (~) or push (>) has as many as its count, a map (%) or an
	// attribute (|) two per pair.
	Count int
	// Line bounds a simple string (+) or error (-) line, in bytes without
	// the type byte and the CRLF.
	Line int
	// Number bounds the other line types: integer (:), double (,), big
	// number ((), boolean (#) and null (_).
	Number int
	// Depth bounds how many aggregates and attributes may be open at once.
	Depth int
	// Reply bounds one top-level reply (or push), attributes included, in
	// bytes on the wire. An aggregate whose elements could not fit in what
	// is left of it, at three bytes at least each, is refused at its
	// header, before the library sizes anything by its count.
	Reply int
}

// Default is what tlsmgr's clients accept; the reason for each figure is
// beside it.
var Default = Limits{
	// tlsmgr's values are sealed TLS sessions and ticket keys: the
	// daemon reads a session from Postfix as at most 64 KiB of base64
	// (attr.DefaultLimits.MaxValue), 48 KiB of bytes, and sealing adds
	// some tens of bytes. The largest bulk strings Redis sends otherwise
	// are INFO (5 KiB, 7 KiB for INFO everything on Redis 7.0, growing
	// with per-command statistics) and CLIENT INFO (under 1 KiB). 512 KiB
	// leaves a factor of 10 over the largest value.
	Bulk: 512 << 10,
	// CLUSTER SLOTS has one entry per slot range, CLUSTER SHARDS two per
	// range: at most 16384 and 32768 with every slot its own range. An
	// invalidation message lists the keys changed in one event loop
	// iteration (228 at most when 5000 keys changed in one pipeline); a
	// message of 4 MiB (Reply) holds about 73 000 of tlsmgr's 50-byte
	// keys, so this bound never cuts one shorter than Reply does. SCAN
	// returns about its COUNT, 500.
	Count: 1 << 17,
	// Error replies are the longest lines, and Redis's are short.
	Line: 64 << 10,
	// An integer has at most 20 characters and Redis writes doubles with
	// 17 significant digits; 1 KiB also keeps big.Int's parse of a big
	// number cheap.
	Number: 1 << 10,
	// COMMAND nests 8 aggregates deep, COMMAND DOCS 12 (Redis 7.0);
	// HELLO, SCAN, CLUSTER SLOTS/SHARDS and pub/sub messages 4 at most.
	Depth: 32,
	// COMMAND's reply is 90 KB and COMMAND DOCS's 170 KB on Redis 7.0,
	// bigger with modules; CLUSTER SLOTS for a thousand nodes about 250 KB.
	// With the reservation of three bytes per announced element, 4 MiB
	// also bounds what a header can make the library allocate before the
	// elements come: about 22 MiB of interface slots.
	Reply: 4 << 20,
}

// ErrRefused matches every refusal (errors.Is).
var ErrRefused = errors.New("redis reply refused")

// Error is a refusal: the reply broke a bound or the protocol at Offset
// (bytes from the start of the connection's stream).
type Error struct {
	Reason string
	Offset int64
}

func (e *Error) Error() string {
	return fmt.Sprintf("redis reply refused: %s (at byte %d of the stream); connection closed", e.Reason, e.Offset)
}

// Is makes errors.Is(err, ErrRefused) hold.
func (e *Error) Is(target error) bool { return target == ErrRefused }

// Wrap returns c guarded by lim. refused, if not nil, is called once, from
// Read, with the refusal that closed the connection. A guarded connection
// implements syscall.Conn when c does, so that go-redis's health check of
// idle connections (a non-blocking MSG_PEEK, which consumes nothing) works
// as on c; everything it reads goes through the guard.
//
// Read must not be called from two goroutines at once (no stream parser
// can follow two readers); the other methods may, as on any net.Conn.
func Wrap(c net.Conn, lim Limits, refused func(*Error)) net.Conn {
	g := &Conn{Conn: c, refused: refused}
	g.p.init(lim)
	if sc, ok := c.(syscall.Conn); ok {
		return &sysConn{g, sc}
	}
	return g
}

// Conn is a guarded connection.
type Conn struct {
	net.Conn
	p       parser
	err     *Error
	refused func(*Error)
}

type sysConn struct {
	*Conn
	sc syscall.Conn
}

func (c *sysConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

// Read reads from the wrapped connection and returns what it read
// unchanged, or, if that breaks a bound, nothing and the refusal; every
// later Read returns the refusal again.
func (c *Conn) Read(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if perr := c.p.feed(b[:n]); perr != nil {
			// None of these bytes reaches the library, not even the
			// replies before the bad one: the connection is finished and
			// its calls fail alike. Closing it tells the server too.
			c.err = perr
			c.Conn.Close()
			if c.refused != nil {
				c.refused(perr)
			}
			return 0, perr
		}
	}
	return n, err
}

// Parser states.
const (
	stType   = iota // the type byte of the next element
	stLine          // the rest of a line, up to LF
	stLen           // the length or count of a header, up to CR
	stLenLF         // the LF after a header's CR
	stBulk          // a bulk payload
	stBulkCR        // the CR after a bulk payload
	stBulkLF        // the LF after it
)

// minElement is the fewest bytes an element can take ("_\r\n", "+\r\n").
const minElement = 3

type frame struct {
	left int  // elements still to come
	attr bool // an attribute: it precedes an element instead of being one
}

// parser follows the framing of one stream incrementally; its zero state
// is between replies.
type parser struct {
	lim Limits

	state   uint8
	kind    byte // type byte of the header or line being read
	neg     bool // the length began with '-'
	digits  int
	n       int // the length read so far; for a line, its bytes so far (CR included)
	lineMax int
	lastCR  bool // for a line: its last byte so far was CR

	bulkLeft int // payload bytes still to come
	stack    []frame
	attrs    int   // attribute frames on stack
	pending  int   // sum of stack[i].left: elements announced, not finished
	reply    int64 // bytes of the current reply before the chunk being fed
	off      int64 // stream offset of the chunk being fed
}

func (p *parser) init(lim Limits) {
	p.lim = lim
	p.stack = make([]frame, 0, min(lim.Depth, 8))
}

func (p *parser) refuse(i int, format string, args ...any) *Error {
	return &Error{Reason: fmt.Sprintf(format, args...), Offset: p.off + int64(i)}
}

// lengthBound is the largest length or count a header of kind may give.
func (p *parser) lengthBound() int {
	switch p.kind {
	case '$', '!', '=':
		return p.lim.Bulk
	case '%', '|':
		return p.lim.Count / 2
	}
	return p.lim.Count
}

var kindNames = [256]string{
	'+': "simple string", '-': "error", ':': "integer", ',': "double", '(': "big number",
	'#': "boolean", '_': "null", '$': "bulk string", '!': "blob error", '=': "verbatim string",
	'*': "array", '~': "set", '>': "push", '%': "map", '|': "attribute",
}

// feed checks b, the next bytes of the stream.
func (p *parser) feed(b []byte) *Error {
	i := 0
	start := 0 // where the current reply's bytes in b begin
	for i < len(b) {
		switch p.state {
		case stType:
			c := b[i]
			i++
			switch c {
			case '+', '-':
				p.state, p.kind, p.n, p.lastCR, p.lineMax = stLine, c, 0, false, p.lim.Line
			case ':', ',', '(', '#', '_':
				p.state, p.kind, p.n, p.lastCR, p.lineMax = stLine, c, 0, false, p.lim.Number
			case '|':
				if p.attrs > 0 {
					// go-redis's readers disagree on its framing.
					return p.refuse(i-1, "attribute inside an attribute")
				}
				fallthrough
			case '$', '!', '=', '*', '~', '>', '%':
				p.state, p.kind, p.n, p.neg, p.digits = stLen, c, 0, false, 0
			default:
				return p.refuse(i-1, "unknown reply type %q", c)
			}

		case stLine:
			// Look for the LF no further than the bound allows: the line's
			// bytes so far (n, CR included) may reach lineMax+1.
			room := p.lineMax + 1 - p.n
			w := b[i:]
			if len(w) > room+1 {
				w = w[:room+1]
			}
			j := bytes.IndexByte(w, '\n')
			if j < 0 {
				if len(w) > room {
					return p.refuse(i+len(w)-1, "%s line longer than %d bytes", kindNames[p.kind], p.lineMax)
				}
				p.n += len(w)
				p.lastCR = w[len(w)-1] == '\r'
				i += len(w)
				continue
			}
			cr := p.lastCR
			if j > 0 {
				cr = w[j-1] == '\r'
			}
			if !cr {
				return p.refuse(i+j, "%s line ended by LF without CR", kindNames[p.kind])
			}
			i += j + 1
			if p.done() {
				if err := p.endReply(i, start); err != nil {
					return err
				}
				start = i
			}

		case stLen:
			c := b[i]
			switch {
			case c >= '0' && c <= '9':
				if p.neg {
					// Only -1 (a null) is negative.
					if p.digits > 0 || c != '1' {
						return p.refuse(i, "%s length is negative", kindNames[p.kind])
					}
					p.n, p.digits = 1, 1
					break
				}
				p.digits++
				p.n = p.n*10 + int(c-'0')
				// The length stays below the bound, so this never
				// overflows; leading zeros are bounded by the digit count.
				if lim := p.lengthBound(); p.n > lim {
					return p.refuse(i, "%s announces more than %d %s", kindNames[p.kind], lim, unit(p.kind))
				}
				if p.digits > 20 {
					return p.refuse(i, "%s length has more than 20 digits", kindNames[p.kind])
				}
			case c == '-' && p.digits == 0 && !p.neg:
				p.neg = true
			case c == '\r' && p.digits > 0:
				p.state = stLenLF
			default:
				return p.refuse(i, "%s length is not a decimal number (byte %q)", kindNames[p.kind], c)
			}
			i++

		case stLenLF:
			if b[i] != '\n' {
				return p.refuse(i, "%s length not ended by CRLF", kindNames[p.kind])
			}
			i++
			at := p.reply + int64(i-start)
			elem, err := p.header(i, at)
			if err != nil {
				return err
			}
			if elem && p.done() {
				if err := p.endReply(i, start); err != nil {
					return err
				}
				start = i
			}

		case stBulk:
			k := min(p.bulkLeft, len(b)-i)
			i += k
			p.bulkLeft -= k
			if p.bulkLeft == 0 {
				p.state = stBulkCR
			}

		case stBulkCR:
			if b[i] != '\r' {
				return p.refuse(i, "%s not followed by CRLF", kindNames[p.kind])
			}
			i++
			p.state = stBulkLF

		case stBulkLF:
			if b[i] != '\n' {
				return p.refuse(i, "%s not followed by CRLF", kindNames[p.kind])
			}
			i++
			if p.done() {
				if err := p.endReply(i, start); err != nil {
					return err
				}
				start = i
			}
		}
	}
	p.reply += int64(len(b) - start)
	if p.reply > int64(p.lim.Reply) {
		return p.refuse(len(b)-1, "reply longer than %d bytes", p.lim.Reply)
	}
	p.off += int64(len(b))
	return nil
}

func unit(kind byte) string {
	switch kind {
	case '$', '!', '=':
		return "bytes"
	case '%', '|':
		return "pairs"
	}
	return "elements"
}

// header acts on a complete header line ending at b[i-1], the reply's
// at-th byte; elem tells that it was a whole element (a null, an empty
// aggregate).
func (p *parser) header(i int, at int64) (elem bool, err *Error) {
	p.state = stType
	n := p.n
	if p.neg {
		if p.kind == '|' {
			return false, p.refuse(i-1, "attribute of -1 pairs")
		}
		return true, nil
	}
	switch p.kind {
	case '$', '!', '=':
		if at+int64(n)+2+minElement*int64(p.pending) > int64(p.lim.Reply) {
			return false, p.refuse(i-1, "%s of %d bytes cannot fit in a reply of %d bytes", kindNames[p.kind], n, p.lim.Reply)
		}
		p.bulkLeft = n
		p.state = stBulk
		if n == 0 {
			p.state = stBulkCR
		}
		return false, nil
	}
	elems := n
	if p.kind == '%' || p.kind == '|' {
		elems = 2 * n
	}
	if elems == 0 {
		// An empty attribute annotates the element that follows.
		return p.kind != '|', nil
	}
	if len(p.stack) >= p.lim.Depth {
		return false, p.refuse(i-1, "aggregates nested more than %d deep", p.lim.Depth)
	}
	if at+minElement*int64(p.pending+elems) > int64(p.lim.Reply) {
		return false, p.refuse(i-1, "%s of %d %s cannot fit in a reply of %d bytes", kindNames[p.kind], n, unit(p.kind), p.lim.Reply)
	}
	attr := p.kind == '|'
	if attr {
		p.attrs++
	}
	p.stack = append(p.stack, frame{left: elems, attr: attr})
	p.pending += elems
	return false, nil
}

// done records that an element ended and reports whether that completed
// a top-level reply.
func (p *parser) done() bool {
	p.state = stType
	for len(p.stack) > 0 {
		top := &p.stack[len(p.stack)-1]
		top.left--
		p.pending--
		if top.left > 0 {
			return false
		}
		p.stack = p.stack[:len(p.stack)-1]
		if top.attr {
			// The attribute's element is still to come.
			p.attrs--
			return false
		}
		// The aggregate is complete: one element of its parent.
	}
	return true
}

// endReply checks the size of the reply that ended at b[i-1], whose bytes
// in this chunk began at start, and starts counting the next one.
func (p *parser) endReply(i, start int) *Error {
	if p.reply+int64(i-start) > int64(p.lim.Reply) {
		return p.refuse(i-1, "reply longer than %d bytes", p.lim.Reply)
	}
	p.reply = 0
	return nil
}

package respguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// small keeps the boundary cases short.
var small = Limits{Bulk: 8, Count: 4, Line: 6, Number: 3, Depth: 3, Reply: 64}

// valid are streams go-redis reads as whole replies: each must pass
// under Default, whole and split at every byte.
var valid = []string{
	"+OK\r\n",
	"+\r\n",
	"-ERR wrong\r\n",
	"-WRONGTYPE a\rb\r\n", // a lone CR inside a line is content
	":0\r\n:-12\r\n",
	",3.14\r\n,inf\r\n,-nan\r\n",
	"(3492890328409238509324850943850943825024385\r\n",
	"#t\r\n#f\r\n",
	"_\r\n",
	"$0\r\n\r\n",
	"$5\r\nhello\r\n",
	"$-1\r\n",
	"$6\r\nab\r\ncd\r\n", // CRLF inside a payload is payload
	"$5\r\n$9223\r\n",    // so is a header
	"!10\r\nERR failed\r\n",
	"=15\r\ntxt:Some string\r\n",
	"*-1\r\n*0\r\n",
	"*3\r\n:1\r\n$2\r\nab\r\n*2\r\n+a\r\n_\r\n",
	"~2\r\n+a\r\n+b\r\n",
	"%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n$1\r\nk\r\n*0\r\n",
	"%0\r\n",
	">3\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n_\r\n",
	"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n*2\r\n:2039123\r\n:9543892\r\n",
	"|0\r\n+OK\r\n",
	"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n", // an attribute does not count as an element
	// The HELLO 3 reply and a RESP2 pub/sub invalidation message.
	"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
	"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$12\r\ntlsmgr:abcde\r\n$12\r\ntlsmgr:fghij\r\n",
	// Leading zeros are decimal digits too, for go-redis as for the guard.
	"$05\r\nhello\r\n",
}

// feedAll feeds the chunks to a fresh parser.
func feedAll(lim Limits, chunks ...[]byte) *Error {
	var p parser
	p.init(lim)
	for _, c := range chunks {
		if err := p.feed(c); err != nil {
			return err
		}
	}
	if p.state != stType || len(p.stack) != 0 {
		return &Error{Reason: fmt.Sprintf("stream ended inside a reply (state %d, %d open)", p.state, len(p.stack))}
	}
	return nil
}

func TestValidStreams(t *testing.T) {
	all := strings.Join(valid, "")
	for _, s := range append(valid, all) {
		b := []byte(s)
		if err := feedAll(Default, b); err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		for cut := 1; cut < len(b); cut++ {
			if err := feedAll(Default, b[:cut], b[cut:]); err != nil {
				t.Errorf("%q cut at %d: %v", s, cut, err)
			}
		}
		bytewise := make([][]byte, len(b))
		for i := range b {
			bytewise[i] = b[i : i+1]
		}
		if err := feedAll(Default, bytewise...); err != nil {
			t.Errorf("%q byte by byte: %v", s, err)
		}
	}
}

// refused pairs a stream with the reason it must be refused for.
var refused = []struct{ stream, why string }{
	// Headers that crashed go-redis (a panic in makeslice, and out of
	// memory), and the other length-prefixed types.
	{"$9223372036854775807\r\n", "bulk string announces more than 524288 bytes"},
	{"$1099511627776\r\n", "bulk string announces more than"},
	{"$99999999999999999999999999\r\n", "bulk string announces more than"},
	{"!9223372036854775807\r\n", "blob error announces more than"},
	{"=9223372036854775807\r\n", "verbatim string announces more than"},
	{"*9223372036854775807\r\n", "array announces more than 131072 elements"},
	{"~9223372036854775807\r\n", "set announces more than"},
	{">9223372036854775807\r\n", "push announces more than"},
	{"%9223372036854775807\r\n", "map announces more than 65536 pairs"},
	{"|9223372036854775807\r\n", "attribute announces more than"},
	{"*1\r\n*1\r\n$9223372036854775807\r\n", "bulk string announces more than"},
	// Negative lengths other than -1, and lengths that are not numbers.
	{"$-2\r\n", "bulk string length is negative"},
	{"*-9223372036854775808\r\n", "array length is negative"},
	{"$-0\r\n", "negative"},
	{"$-10\r\n", "negative"},
	{"$--1\r\n", "not a decimal number"},
	{"$+5\r\nhello\r\n", "not a decimal number"},
	{"$\r\n", "not a decimal number"},
	{"$ 5\r\n", "not a decimal number"},
	{"$5\n", "not a decimal number"},
	{"$5\r\r\n", "length not ended by CRLF"},
	{"$?\r\n;4\r\nHell\r\n;0\r\n", "not a decimal number"}, // streamed strings
	{"*?\r\n:1\r\n.\r\n", "not a decimal number"},
	{"$000000000000000000005\r\n", "more than 20 digits"},
	{"|-1\r\n+OK\r\n", "attribute of -1 pairs"},
	// Framing go-redis does not share.
	{"$3\r\nabcd\r\n", "bulk string not followed by CRLF"},
	{"$3\r\nabc\n\r", "not followed by CRLF"},
	{"+OK\n", "simple string line ended by LF without CR"},
	{"+\n", "ended by LF without CR"},
	{"@5\r\n", "unknown reply type '@'"},
	{"\r\n", "unknown reply type '\\r'"},
	{"OK\r\n", "unknown reply type 'O'"},
	{"|1\r\n+k\r\n|1\r\n+a\r\n+b\r\n+v\r\n+OK\r\n", "attribute inside an attribute"},
	// Lines without an end.
	{"+" + strings.Repeat("a", 64<<10+2), "simple string line longer than 65536 bytes"},
	{"-" + strings.Repeat("a", 1<<20) + "\r\n", "error line longer than"},
	{":" + strings.Repeat("9", 1025) + "\r\n", "integer line longer than 1024 bytes"},
	{"(" + strings.Repeat("9", 4096), "big number line longer than"},
	{"," + strings.Repeat("1", 2000), "double line longer than"},
	// Nesting.
	{strings.Repeat("*1\r\n", 33) + ":1\r\n", "nested more than 32 deep"},
	{strings.Repeat("%1\r\n+k\r\n", 40), "nested more than 32 deep"},
	{strings.Repeat("*1\r\n|1\r\n+k\r\n+v\r\n", 40), "nested more than 32 deep"},
	// Counts that the reply bound cannot hold.
	{strings.Repeat("*131072\r\n", 11), "array of 131072 elements cannot fit in a reply of 4194304 bytes"},
	{"*9\r\n" + strings.Repeat("$524288\r\n"+strings.Repeat("x", 524288)+"\r\n", 9), "cannot fit in a reply"},
}

func TestRefused(t *testing.T) {
	for _, c := range refused {
		name := c.stream
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		b := []byte(c.stream)
		err := feedAll(Default, b)
		if err == nil || !strings.Contains(err.Reason, c.why) {
			t.Errorf("%q: %v, want a refusal for %q", name, err, c.why)
			continue
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%q: %v is not ErrRefused", name, err)
		}
		// Fed in pieces, the same refusal, and no later than the whole
		// stream: a header is refused before the bytes after it arrive.
		for _, size := range []int{1, 2, 3, 7, 4096} {
			var chunks [][]byte
			for i := 0; i < len(b); i += size {
				chunks = append(chunks, b[i:min(i+size, len(b))])
			}
			perr := feedAll(Default, chunks...)
			if perr == nil || perr.Reason != err.Reason {
				t.Errorf("%q in chunks of %d: %v, want %v", name, size, perr, err)
			}
		}
	}
}

// Each bound holds exactly: at the bound a reply passes, past it it is
// refused.
func TestBounds(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	// Reply has limits of its own, so that the others do not bind first.
	reply := Limits{Bulk: 100, Count: 100, Line: 100, Number: 100, Depth: 10, Reply: 64}
	for _, c := range []struct {
		lim          Limits
		ok, bad, why string
	}{
		{small, "$8\r\n" + x(8) + "\r\n", "$9\r\n" + x(9) + "\r\n", "more than 8 bytes"},
		{small, "!8\r\n" + x(8) + "\r\n", "!9\r\n", "more than 8 bytes"},
		{small, "*4\r\n_\r\n_\r\n_\r\n_\r\n", "*5\r\n", "more than 4 elements"},
		{small, "%2\r\n_\r\n_\r\n_\r\n_\r\n", "%3\r\n", "more than 2 pairs"},
		{small, "+" + x(6) + "\r\n", "+" + x(7) + "\r\n", "longer than 6 bytes"},
		{small, "-" + x(5) + "\r\r\n", "-" + x(6) + "\r\r\n", "longer than 6 bytes"},
		{small, ":123\r\n", ":1234\r\n", "longer than 3 bytes"},
		{small, "*1\r\n*1\r\n*1\r\n_\r\n", "*1\r\n*1\r\n*1\r\n*1\r\n_\r\n", "nested more than 3 deep"},
		// A reply of 64 bytes, and of 65.
		{reply, "+" + x(61) + "\r\n", "+" + x(62) + "\r\n", "reply longer than 64 bytes"},
		{reply, "$57\r\n" + x(57) + "\r\n", "$58\r\n" + x(58) + "\r\n", "bulk string of 58 bytes cannot fit in a reply of 64 bytes"},
		{reply, "*2\r\n+" + x(27) + "\r\n+" + x(27) + "\r\n", "*2\r\n+" + x(27) + "\r\n+" + x(28) + "\r\n", "reply longer than 64 bytes"},
		// Attributes count towards the reply they annotate.
		{reply, strings.Repeat("|1\r\n+k\r\n+v\r\n", 4) + "+" + x(13) + "\r\n",
			strings.Repeat("|1\r\n+k\r\n+v\r\n", 4) + "+" + x(14) + "\r\n", "reply longer than 64 bytes"},
		{reply, "+OK\r\n", strings.Repeat("|1\r\n+k\r\n+v\r\n", 6) + "+OK\r\n", "attribute of 1 pairs cannot fit"},
		// Three bytes are reserved for each element announced.
		{reply, "*2\r\n+" + x(50) + "\r\n_\r\n", "*2\r\n+" + x(50) + "\r\n$3\r\nabc\r\n", "bulk string of 3 bytes cannot fit"},
		{reply, "*19\r\n" + strings.Repeat("_\r\n", 19), "*20\r\n", "array of 20 elements cannot fit"},
	} {
		if err := feedAll(c.lim, []byte(c.ok)); err != nil {
			t.Errorf("%q: %v", c.ok, err)
		}
		if err := feedAll(c.lim, []byte(c.bad)); err == nil || !strings.Contains(err.Reason, c.why) {
			t.Errorf("%q: %v, want %q", c.bad, err, c.why)
		}
	}
	// The reply bound is per reply: many replies in a row are fine.
	var b strings.Builder
	for range 100 {
		b.WriteString("$8\r\n" + x(8) + "\r\n")
	}
	if err := feedAll(small, []byte(b.String())); err != nil {
		t.Errorf("100 replies of 14 bytes under a reply bound of 64: %v", err)
	}
}

// gen writes a random valid reply nested d deep; inAttr keeps attributes
// out of attributes.
func gen(r *rand.Rand, w *bytes.Buffer, d int, inAttr bool) {
	kinds := "+-:,(#_$!=*~>%|"
	switch {
	case d >= 4:
		kinds = kinds[:10]
	case inAttr:
		kinds = kinds[:14]
	}
	switch k := kinds[r.IntN(len(kinds))]; k {
	case '+', '-', ':', ',', '(', '#', '_':
		w.WriteByte(k)
		for range r.IntN(20) {
			w.WriteByte(byte('a' + r.IntN(26)))
		}
		if r.IntN(5) == 0 {
			w.WriteString("\rx") // a lone CR
		}
		w.WriteString("\r\n")
	case '$', '!', '=':
		if r.IntN(8) == 0 {
			fmt.Fprintf(w, "%c-1\r\n", k)
			return
		}
		n := r.IntN(3000)
		fmt.Fprintf(w, "%c%d\r\n", k, n)
		for range n {
			w.WriteByte("$*\r\n+x"[r.IntN(6)])
		}
		w.WriteString("\r\n")
	case '*', '~', '>':
		n := r.IntN(5)
		fmt.Fprintf(w, "%c%d\r\n", k, n)
		for range n {
			gen(r, w, d+1, inAttr)
		}
	case '%':
		n := r.IntN(3)
		fmt.Fprintf(w, "%c%d\r\n", k, n)
		for range 2 * n {
			gen(r, w, d+1, inAttr)
		}
	case '|':
		n := r.IntN(3)
		fmt.Fprintf(w, "%c%d\r\n", k, n)
		for range 2 * n {
			gen(r, w, d+1, true)
		}
		gen(r, w, d, inAttr) // the element it annotates
	}
}

// A long random stream of valid replies passes through Read unchanged,
// whatever sizes the reads return.
func TestRandomStreamUnchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var w bytes.Buffer
	for w.Len() < 4<<20 {
		gen(r, &w, 0, false)
	}
	stream := w.Bytes()
	if err := feedAll(Default, stream); err != nil {
		t.Fatalf("random stream refused: %v near %q", err, stream[max(0, err.Offset-40):min(len(stream), int(err.Offset)+40)])
	}
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		// Writes of random sizes, so Read returns random pieces.
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(70000))
			if _, err := b.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		b.Close()
	}()
	g := Wrap(a, Default, func(e *Error) { t.Errorf("refused: %v", e) })
	got, err := io.ReadAll(g)
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("read %d bytes, %v; want the %d bytes written", len(got), err, len(stream))
	}
}

// A refusal fails that Read and every later one, closes the connection,
// and is reported once; the bytes before it in the same read are not
// delivered either.
func TestConnRefusal(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	var reports []*Error
	g := Wrap(a, Default, func(e *Error) { reports = append(reports, e) })
	go func() {
		b.Write([]byte("+OK\r\n"))
		b.Write([]byte("$5\r\nhello\r\n$9223372036854775807\r\n"))
	}()
	buf := make([]byte, 100)
	n, err := g.Read(buf)
	if err != nil || string(buf[:n]) != "+OK\r\n" {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	n, err = g.Read(buf)
	var e *Error
	// The header starts at byte 16; its sixth digit, 922337, is over.
	if n != 0 || !errors.As(err, &e) || !errors.Is(err, ErrRefused) || e.Offset != 22 {
		t.Fatalf("second read: %d bytes, %v; want 0 and a refusal at byte 22", n, err)
	}
	want := "redis reply refused: bulk string announces more than 524288 bytes (at byte 22 of the stream); connection closed"
	if err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}
	if n, err2 := g.Read(buf); n != 0 || err2 != err {
		t.Errorf("read after the refusal: %d, %v", n, err2)
	}
	if len(reports) != 1 || reports[0] != e {
		t.Errorf("reported %v", reports)
	}
	// Closed: the peer sees it.
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.Read(buf); err != io.EOF {
		t.Errorf("peer read after the refusal: %v, want EOF", err)
	}
}

// A TCP connection stays a syscall.Conn (for go-redis's health check);
// a connection that is not one does not become one.
func TestSyscallConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("+PONG\r\n"))
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	g := Wrap(c, Default, nil)
	defer g.Close()
	if _, ok := g.(syscall.Conn); !ok {
		t.Error("guarded TCP connection is not a syscall.Conn")
	}
	buf := make([]byte, 10)
	if n, err := g.Read(buf); err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Errorf("read %q, %v", buf[:n], err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := Wrap(a, Default, nil).(syscall.Conn); ok {
		t.Error("guarded pipe is a syscall.Conn")
	}
}

// Anything at all: the parser never panics, and a refusal's offset is
// within what was fed.
func FuzzParser(f *testing.F) {
	for _, s := range valid {
		f.Add([]byte(s), uint8(3))
	}
	for _, c := range refused {
		if len(c.stream) < 200 {
			f.Add([]byte(c.stream), uint8(1))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		var p parser
		p.init(small)
		size := int(chunk%16) + 1
		for i := 0; i < len(b); i += size {
			if err := p.feed(b[i:min(i+size, len(b))]); err != nil {
				if err.Offset < 0 || err.Offset >= int64(len(b)) {
					t.Fatalf("offset %d outside the %d bytes fed", err.Offset, len(b))
				}
				return
			}
		}
		if len(p.stack) > small.Depth || p.pending < 0 || p.attrs < 0 {
			t.Fatalf("state out of bounds: %+v", p)
		}
	})
}

var sink int

// BenchmarkFeedGet1KB is the guard's cost per reply of a GET of 1 KB, fed
// as go-redis's 32 KiB bufio.Reader would read a stream of them.
func BenchmarkFeedGet1KB(b *testing.B) {
	reply := "$1024\r\n" + strings.Repeat("v", 1024) + "\r\n"
	stream := []byte(strings.Repeat(reply, 32<<10/len(reply)))
	per := len(stream) / len(reply)
	var p parser
	p.init(Default)
	b.SetBytes(int64(len(reply)))
	b.ResetTimer()
	for i := 0; i < b.N; i += per {
		if err := p.feed(stream); err != nil {
			b.Fatal(err)
		}
	}
	sink = p.n
}

package redistest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP relay in front of a server whose connections can be
// black-holed: nothing passes either way, nothing is closed, as when a
// firewall starts dropping a host's packets. A member pointed at a Proxy
// loses Redis while the others keep it.
type Proxy struct {
	Addr string // "127.0.0.1:port", for the member's settings

	target string
	ln     net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	all    bool                    // every connection, new ones too, is black-holed
	match  func(sent []byte) bool  // ... or those whose client sent this
	conns  map[*proxyConn]struct{} // open
	closed bool
}

type proxyConn struct {
	client, server net.Conn
	sent           []byte // the client's first bytes, for match
	holed          bool
}

// sentKept is how much of what a client sends a Proxy keeps for matching.
const sentKept = 4096

// NewProxy relays to target (a Server's Addr) until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// BlackHole stops every connection, and those opened from now on, until
// Restore.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	p.all = true
	p.mu.Unlock()
}

// BlackHoleWhere stops, until Restore, the connections whose client has
// sent (so far, or later) something match accepts: go-redis's SUBSCRIBE
// tells a subscriber connection apart.
func (p *Proxy) BlackHoleWhere(match func(sent []byte) bool) {
	p.mu.Lock()
	p.match = match
	for c := range p.conns {
		c.holed = c.holed || match(c.sent)
	}
	p.mu.Unlock()
}

// Holed returns how many connections are black-holed.
func (p *Proxy) Holed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if p.all || c.holed {
			n++
		}
	}
	return n
}

// Restore lets everything pass again; what was held is delivered.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.all, p.match = false, nil
	for c := range p.conns {
		c.holed = false
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Contains is a match for BlackHoleWhere: the client sent s, in any case.
func Contains(s string) func([]byte) bool {
	low := bytes.ToLower([]byte(s))
	return func(sent []byte) bool { return bytes.Contains(bytes.ToLower(sent), low) }
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[*proxyConn]struct{}{}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	for c := range conns {
		c.client.Close()
		c.server.Close()
	}
}

func (p *Proxy) accept() {
	for {
		cn, err := p.ln.Accept()
		if err != nil {
			return
		}
		sn, err := net.Dial("tcp", p.target)
		if err != nil {
			cn.Close()
			continue
		}
		c := &proxyConn{client: cn, server: sn}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			cn.Close()
			sn.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.relay(c, c.client, c.server, true)
		go p.relay(c, c.server, c.client, false)
	}
}

// relay copies src to dst, holding what it read while c is black-holed.
func (p *Proxy) relay(c *proxyConn, src, dst net.Conn, fromClient bool) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		src.Close()
		dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		if !p.wait(c) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 && fromClient {
			p.mu.Lock()
			if len(c.sent) < sentKept {
				c.sent = append(c.sent, buf[:min(n, sentKept-len(c.sent))]...)
			}
			if p.match != nil && p.match(c.sent) {
				c.holed = true
			}
			p.mu.Unlock()
		}
		if n > 0 {
			if !p.wait(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// wait blocks while c is black-holed; false once the proxy is closed.
func (p *Proxy) wait(c *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && (p.all || c.holed) {
		p.cond.Wait()
	}
	return !p.closed
}

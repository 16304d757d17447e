// Package redisfake is a Redis impostor for tests: a loopback listener
// that answers go-redis's connection set-up as a Redis server would (HELLO
// 2 or 3, AUTH, SELECT, CLIENT ..., PING, SUBSCRIBE, and the CLUSTER SLOTS
// and SENTINEL questions that make it a one-node cluster or its own
// sentinel), and every other command as the test's Handler says, so that a
// test can send a client what no real server would: hostile headers,
// endless lines, trickles.
package redisfake

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Handler answers one command (args[0] is upper-cased) on c; it returns
// false to leave the command to the default answer. It runs on the
// connection's goroutine: until it returns, that connection reads nothing.
type Handler func(c *Conn, args []string) bool

// Server is a fake Redis on 127.0.0.1.
type Server struct {
	Addr string // "127.0.0.1:port"
	Port int

	// Master is what SENTINEL GET-MASTER-ADDR-BY-NAME answers; the server
	// itself if empty. Set it before a client connects.
	Master string

	h      Handler
	ln     net.Listener
	nextID atomic.Int64
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[int64]*Conn
	cmds   []string
	closed bool
}

// Conn is one client connection.
type Conn struct {
	ID    int64 // what CLIENT ID answers
	Proto int   // 2, or 3 after HELLO 3
	// Subscribed is true once the connection subscribed to a channel:
	// RESP2 PING answers differ.
	Subscribed bool

	nc  net.Conn
	wmu sync.Mutex
}

// Start listens on a free loopback port; t.Cleanup closes the server and
// its connections.
func Start(t testing.TB, h Handler) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{h: h, ln: ln, conns: map[int64]*Conn{}}
	s.Addr = ln.Addr().String()
	s.Port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server, closes its connections and waits for their
// goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// Commands returns the commands received so far, each as its arguments
// joined by spaces (cut at 100 bytes), in order of arrival.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// Conn returns the open connection whose CLIENT ID is id, or nil.
func (s *Server) Conn(id int64) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &Conn{ID: s.nextID.Add(1), Proto: 2, nc: nc}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c.ID] = c
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *Server) serve(c *Conn) {
	defer s.wg.Done()
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c.ID)
		s.mu.Unlock()
	}()
	r := bufio.NewReader(c.nc)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		args[0] = strings.ToUpper(args[0])
		line := strings.Join(args, " ")
		if len(line) > 100 {
			line = line[:100]
		}
		s.mu.Lock()
		s.cmds = append(s.cmds, line)
		s.mu.Unlock()
		if s.h != nil && s.h(c, args) {
			continue
		}
		if err := c.Send(s.answer(c, args)); err != nil {
			return
		}
	}
}

// readCommand reads one command as go-redis sends it: an array of bulk
// strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	n, err := readLen(r, '*')
	if err != nil || n < 1 || n > 1024 {
		return nil, errors.Join(err, errors.New("bad command"))
	}
	args := make([]string, n)
	for i := range args {
		l, err := readLen(r, '$')
		if err != nil || l < 0 || l > 1<<20 {
			return nil, errors.Join(err, errors.New("bad argument"))
		}
		b := make([]byte, l+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		args[i] = string(b[:l])
	}
	return args, nil
}

func readLen(r *bufio.Reader, kind byte) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 4 || line[0] != kind || !strings.HasSuffix(line, "\r\n") {
		return 0, fmt.Errorf("unexpected %q", line)
	}
	return strconv.Atoi(line[1 : len(line)-2])
}

// Bulk encodes s as a bulk string.
func Bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// Array encodes the elements, already encoded, as an array.
func Array(elems ...string) string {
	return "*" + strconv.Itoa(len(elems)) + "\r\n" + strings.Join(elems, "")
}

func (s *Server) hostPort(addr string) (string, string) {
	if addr == "" {
		addr = s.Addr
	}
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}

// answer is what a Redis 7 server would say.
func (s *Server) answer(c *Conn, args []string) string {
	sub := ""
	if len(args) > 1 {
		sub = strings.ToUpper(args[1])
	}
	switch args[0] {
	case "HELLO":
		if sub == "3" {
			c.Proto = 3
		}
		fields := []string{
			Bulk("server"), Bulk("redis"), Bulk("version"), Bulk("7.0.15"),
			Bulk("proto"), ":" + strconv.Itoa(c.Proto) + "\r\n", Bulk("id"), ":" + strconv.FormatInt(c.ID, 10) + "\r\n",
			Bulk("mode"), Bulk("standalone"), Bulk("role"), Bulk("master"), Bulk("modules"), "*0\r\n",
		}
		if c.Proto == 3 {
			return "%7\r\n" + strings.Join(fields, "")
		}
		return Array(fields...)
	case "AUTH", "SELECT", "READONLY", "READWRITE", "SET":
		return "+OK\r\n"
	case "CLIENT":
		if sub == "ID" {
			return ":" + strconv.FormatInt(c.ID, 10) + "\r\n"
		}
		return "+OK\r\n"
	case "PING":
		payload := ""
		if len(args) > 1 {
			payload = args[1]
		}
		if c.Subscribed && c.Proto == 2 {
			return Array(Bulk("pong"), Bulk(payload))
		}
		if len(args) > 1 {
			return Bulk(payload)
		}
		return "+PONG\r\n"
	case "SUBSCRIBE":
		c.Subscribed = true
		var b strings.Builder
		for i, ch := range args[1:] {
			msg := Array(Bulk("subscribe"), Bulk(ch), ":"+strconv.Itoa(i+1)+"\r\n")
			if c.Proto == 3 {
				msg = ">" + msg[1:]
			}
			b.WriteString(msg)
		}
		return b.String()
	case "GET":
		return "$-1\r\n"
	case "DEL", "UNLINK", "EXISTS":
		return ":0\r\n"
	case "ROLE":
		return Array(Bulk("master"), ":0\r\n", "*0\r\n")
	case "COMMAND":
		return "*0\r\n"
	case "CLUSTER":
		if sub == "SLOTS" {
			h, p := s.hostPort("")
			port, _ := strconv.Atoi(p)
			return Array(Array(":0\r\n", ":16383\r\n", Array(Bulk(h), ":"+strconv.Itoa(port)+"\r\n", Bulk(strings.Repeat("f", 40)))))
		}
	case "SENTINEL":
		switch sub {
		case "GET-MASTER-ADDR-BY-NAME":
			h, p := s.hostPort(s.Master)
			return Array(Bulk(h), Bulk(p))
		case "SENTINELS", "REPLICAS", "SLAVES":
			return "*0\r\n"
		}
	}
	return "-ERR unknown command '" + strings.ToLower(args[0]) + "'\r\n"
}

// Send writes s in one write.
func (c *Conn) Send(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := io.WriteString(c.nc, s)
	return err
}

// Trickle writes s a byte at a time, gap apart.
func (c *Conn) Trickle(s string, gap time.Duration) error {
	for i := range len(s) {
		if err := c.Send(s[i : i+1]); err != nil {
			return err
		}
		time.Sleep(gap)
	}
	return nil
}

// Flood writes head, then unit over and over until total bytes are
// written or the client goes away.
func (c *Conn) Flood(head, unit string, total int) error {
	if err := c.Send(head); err != nil {
		return err
	}
	chunk := strings.Repeat(unit, max(1, (64<<10)/len(unit)))
	for sent := len(head); sent < total; sent += len(chunk) {
		if err := c.Send(chunk); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

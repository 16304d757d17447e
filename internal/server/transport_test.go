package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The transport contract (see transport), checked against each transport:
// the blocking one, the netpoller's on a UNIX socket, and the netpoller's
// on pipes, as -S serves stdin and stdout.

// transportKind makes one kind of transport for the server's end of a
// fresh connection, and gives the client's end.
type transportKind struct {
	name string
	make func(t *testing.T, idle, write time.Duration) (transport, *peerEnd)
	// keepsSent: stop keeps what the client sent (a socket shuts down
	// its reading side); knowsPeer: pending and peerUID can tell.
	keepsSent, knowsPeer bool
}

// peerEnd is the client's end of a connection.
type peerEnd struct {
	io.Reader
	io.Writer
	close func()
}

var transportKinds = []transportKind{
	{name: "blocking", keepsSent: true, knowsPeer: true,
		make: func(t *testing.T, idle, write time.Duration) (transport, *peerEnd) {
			sc, p := unixPair(t)
			tr, err := newBlockingTransport(sc, idle, write, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr.Close() })
			return tr, p
		}},
	{name: "netpoll", keepsSent: true, knowsPeer: true,
		make: func(t *testing.T, idle, write time.Duration) (transport, *peerEnd) {
			sc, p := unixPair(t)
			tr := newNetpollTransport(sc, idle, write)
			t.Cleanup(func() { tr.Close() })
			return tr, p
		}},
	{name: "netpoll pipes",
		make: func(t *testing.T, idle, write time.Duration) (transport, *peerEnd) {
			sc, cc := pipePair(t)
			tr := newNetpollTransport(sc, idle, write)
			t.Cleanup(func() { tr.Close() })
			return tr, &peerEnd{Reader: cc, Writer: cc, close: func() { cc.Close() }}
		}},
}

// unixPair is both ends of a UNIX stream connection.
func unixPair(t *testing.T) (*net.UnixConn, *peerEnd) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cc, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return sc.(*net.UnixConn), &peerEnd{Reader: cc, Writer: cc, close: func() { cc.Close() }}
}

// pipeConn is the server's end of two pipes, as -S has them: no
// CloseRead, no SyscallConn.
type pipeConn struct {
	r, w *os.File
}

func (c *pipeConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c *pipeConn) Close() error                       { return errors.Join(c.r.Close(), c.w.Close()) }
func (c *pipeConn) LocalAddr() net.Addr                { return nil }
func (c *pipeConn) RemoteAddr() net.Addr               { return nil }
func (c *pipeConn) SetDeadline(t time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// pipePair is the server's end and the client's of a connection through
// two pipes.
func pipePair(t *testing.T) (*pipeConn, *pipeConn) {
	t.Helper()
	sr, cw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cr, sw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cc := &pipeConn{r: cr, w: cw}
	t.Cleanup(func() { cc.Close() })
	return &pipeConn{r: sr, w: sw}, cc
}

// forEachTransport runs test against every kind of transport.
func forEachTransport(t *testing.T, test func(t *testing.T, k transportKind)) {
	for _, k := range transportKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k) })
	}
}

// result is what a read or write in a goroutine came to.
type result struct {
	n   int
	err error
	at  time.Time
}

func inBackground(f func() (int, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		n, err := f()
		ch <- result{n, err, time.Now()}
	}()
	return ch
}

func within(t *testing.T, ch <-chan result, d time.Duration, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("%s still waiting after %v", what, d)
		return result{}
	}
}

// tookAbout fails unless d is at least want (less a jiffy: the kernel's
// timers count in them) and not much more.
func tookAbout(t *testing.T, what string, d, want time.Duration) {
	t.Helper()
	if d < want-10*time.Millisecond || d > want+3*time.Second {
		t.Errorf("%s took %v, want about %v", what, d, want)
	}
}

const (
	waitLong  = time.Hour
	waitShort = 150 * time.Millisecond
)

func TestTransportReads(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		tr, peer := k.make(t, waitLong, waitLong)
		if tr.pending() {
			t.Error("pending before the client sent anything")
		}
		io.WriteString(peer, "hello")
		if got := tr.pending(); got != k.knowsPeer {
			t.Errorf("pending with bytes sent = %v, want %v", got, k.knowsPeer)
		}
		buf := make([]byte, 64)
		if n, err := tr.readNext(buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("readNext = %q, %v", buf[:n], err)
		}
		// readBy takes what comes before its deadline.
		go func() { time.Sleep(50 * time.Millisecond); io.WriteString(peer, "rest") }()
		if n, err := tr.readBy(buf, time.Now().Add(10*time.Second)); err != nil || string(buf[:n]) != "rest" {
			t.Fatalf("readBy = %q, %v", buf[:n], err)
		}
		// The client hangs up: end of file.
		peer.close()
		if _, err := tr.readNext(buf); err != io.EOF {
			t.Fatalf("readNext after the client closed = %v, want io.EOF", err)
		}
	})
}

// expires runs f, which must fail with os.ErrDeadlineExceeded after about
// want.
func expires(t *testing.T, what string, want time.Duration, f func() (int, error)) {
	t.Helper()
	start := time.Now()
	r := within(t, inBackground(f), want+5*time.Second, what)
	if !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s = %d, %v; want os.ErrDeadlineExceeded", what, r.n, r.err)
	}
	tookAbout(t, what, r.at.Sub(start), want)
}

// TestTransportIdleTimeout: readNext waits up to the idle timeout,
// counted from each call.
func TestTransportIdleTimeout(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		tr, _ := k.make(t, waitShort, waitLong)
		buf := make([]byte, 64)
		expires(t, "readNext with nothing sent", waitShort, func() (int, error) { return tr.readNext(buf) })
		expires(t, "readNext again", waitShort, func() (int, error) { return tr.readNext(buf) })
	})
}

// TestTransportReadDeadline: readBy ends at its deadline, however long the
// idle timeout; a deadline past fails at once, bytes waiting or not.
func TestTransportReadDeadline(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		tr, peer := k.make(t, waitLong, waitLong)
		buf := make([]byte, 64)
		expires(t, "readBy with nothing sent", waitShort, func() (int, error) {
			return tr.readBy(buf, time.Now().Add(waitShort))
		})
		io.WriteString(peer, "late")
		expires(t, "readBy past its deadline", 0, func() (int, error) {
			return tr.readBy(buf, time.Now().Add(-time.Second))
		})
		if n, err := tr.readBy(buf, time.Now().Add(10*time.Second)); err != nil || string(buf[:n]) != "late" {
			t.Fatalf("readBy with a new deadline = %q, %v", buf[:n], err)
		}
	})
}

// TestTransportReplyTimeout: the Writes of one reply wait for a client
// that does not read for the write timeout in all, not each; the next
// reply has its own.
func TestTransportReplyTimeout(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		const timeout = 500 * time.Millisecond
		tr, peer := k.make(t, waitLong, timeout)
		// A client that reads takes a reply larger than any buffer.
		big := bytes.Repeat([]byte("r"), 4<<20)
		got := inBackground(func() (int, error) {
			n, err := io.ReadFull(peer, make([]byte, len(big)))
			return int(n), err
		})
		tr.beginReply()
		if n, err := tr.Write(big); n != len(big) || err != nil {
			t.Fatalf("Write to a client reading = %d, %v", n, err)
		}
		if r := within(t, got, 10*time.Second, "the client's read"); r.err != nil {
			t.Fatalf("the client read %d bytes: %v", r.n, r.err)
		}

		// A client that does not read: the reply's Writes end together.
		tr.beginReply()
		chunk := make([]byte, 64<<10)
		start := time.Now()
		writes := 0
		var err error
		for ; err == nil && writes < 10000; writes++ {
			_, err = tr.Write(chunk)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Writes to a client not reading = %v after %d writes, want os.ErrDeadlineExceeded", err, writes)
		}
		tookAbout(t, "the reply's writes", time.Since(start), timeout)
		// Still no room: the same reply's next Write fails at once.
		start = time.Now()
		if _, err := tr.Write(chunk); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a Write after the reply's time = %v, want os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d > timeout/2 {
			t.Errorf("a Write after the reply's time waited %v", d)
		}
		// A new reply waits again.
		tr.beginReply()
		start = time.Now()
		if _, err := tr.Write(chunk); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the next reply's Write = %v, want os.ErrDeadlineExceeded", err)
		}
		tookAbout(t, "the next reply's Write", time.Since(start), timeout)
	})
}

// TestTransportStopWhileWaiting: stop ends a read waiting for the next
// request or for the rest of one, at once.
func TestTransportStopWhileWaiting(t *testing.T) {
	for _, read := range []string{"readNext", "readBy"} {
		t.Run(read, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, k transportKind) {
				tr, _ := k.make(t, waitLong, waitLong)
				buf := make([]byte, 64)
				done := inBackground(func() (int, error) {
					if read == "readNext" {
						return tr.readNext(buf)
					}
					return tr.readBy(buf, time.Now().Add(waitLong))
				})
				time.Sleep(50 * time.Millisecond)
				if keeps := tr.stop(); keeps != k.keepsSent {
					t.Errorf("stop = %v, want %v", keeps, k.keepsSent)
				}
				r := within(t, done, 5*time.Second, read+" after stop")
				want := io.EOF
				if !k.keepsSent {
					want = os.ErrDeadlineExceeded
				}
				if r.n != 0 || !errors.Is(r.err, want) {
					t.Fatalf("%s after stop = %d, %v; want %v", read, r.n, r.err, want)
				}
			})
		})
	}
}

// TestTransportStopKeepsSent: after stop, a transport that keeps what the
// client sent reads it, then end of file, and the client's later writes
// fail; one that cannot fails every read, and no later deadline undoes
// that. Either way the reply being written goes out.
func TestTransportStopKeepsSent(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		tr, peer := k.make(t, waitLong, waitLong)
		io.WriteString(peer, "sent")
		tr.stop()
		buf := make([]byte, 64)
		if k.keepsSent {
			if n, err := tr.readNext(buf); err != nil || string(buf[:n]) != "sent" {
				t.Fatalf("readNext after stop = %q, %v; want what was sent", buf[:n], err)
			}
			if _, err := tr.readBy(buf, time.Now().Add(waitLong)); err != io.EOF {
				t.Fatalf("readBy after what was sent = %v, want io.EOF", err)
			}
			if _, err := io.WriteString(peer, "later"); err == nil {
				t.Error("the client's write after stop was taken")
			}
		} else {
			for _, read := range []struct {
				name string
				f    func() (int, error)
			}{
				{"readNext", func() (int, error) { return tr.readNext(buf) }},
				{"readBy with a new deadline", func() (int, error) { return tr.readBy(buf, time.Now().Add(waitLong)) }},
			} {
				r := within(t, inBackground(read.f), 5*time.Second, read.name+" after stop")
				if !errors.Is(r.err, os.ErrDeadlineExceeded) {
					t.Fatalf("%s after stop = %d, %v; want os.ErrDeadlineExceeded", read.name, r.n, r.err)
				}
			}
		}
		tr.beginReply()
		if _, err := io.WriteString(tr, "reply"); err != nil {
			t.Fatalf("Write after stop: %v", err)
		}
		if n, err := io.ReadAtLeast(peer, buf, 5); err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("the client got %q, %v; want the reply", buf[:n], err)
		}
	})
}

// TestTransportAbort: abort ends reads and writes waiting, at once.
func TestTransportAbort(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		forEachTransport(t, func(t *testing.T, k transportKind) {
			tr, _ := k.make(t, waitLong, waitLong)
			done := inBackground(func() (int, error) { return tr.readNext(make([]byte, 64)) })
			time.Sleep(50 * time.Millisecond)
			tr.abort()
			if r := within(t, done, 5*time.Second, "readNext after abort"); r.n != 0 || r.err == nil {
				t.Fatalf("readNext after abort = %d, %v; want an error", r.n, r.err)
			}
		})
	})
	t.Run("write", func(t *testing.T) {
		forEachTransport(t, func(t *testing.T, k transportKind) {
			tr, _ := k.make(t, waitLong, waitLong)
			tr.beginReply()
			done := inBackground(func() (int, error) { return tr.Write(make([]byte, 8<<20)) })
			time.Sleep(50 * time.Millisecond)
			tr.abort()
			if r := within(t, done, 5*time.Second, "Write after abort"); r.err == nil {
				t.Fatalf("Write after abort = %d, nil; want an error", r.n)
			}
		})
	})
}

// TestTransportPeerAndClose: peerUID names the client's uid where the
// kernel knows it; Close ends the connection for the client, and may be
// called again.
func TestTransportPeerAndClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, k transportKind) {
		tr, peer := k.make(t, waitLong, waitLong)
		uid, err := tr.peerUID()
		switch {
		case k.knowsPeer && (err != nil || uid != uint32(os.Getuid())):
			t.Errorf("peerUID = %d, %v; want %d", uid, err, os.Getuid())
		case !k.knowsPeer && err != errNoPeer:
			t.Errorf("peerUID on pipes = %d, %v; want %v", uid, err, errNoPeer)
		}
		tr.Close()
		tr.Close()
		if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("the client's read after Close = %d, %v; want io.EOF", n, err)
		}
	})
}

// TestBlockingTransportReleasesOnce: the blocking transport gives back its
// place among the MaxBlocking connections when closed, once.
func TestBlockingTransportReleasesOnce(t *testing.T) {
	sc, _ := unixPair(t)
	released := 0
	tr, err := newBlockingTransport(sc, waitLong, waitLong, func() { released++ })
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	tr.Close()
	if released != 1 {
		t.Errorf("released %d times, want once", released)
	}
}

// TestServeConnSyncPipes: a connection that cannot shut down its reading
// side (-S on pipes) is served like any other, and Shutdown ends it at
// once while it waits for a request.
func TestServeConnSyncPipes(t *testing.T) {
	f := newFixture(t)
	sc, cc := pipePair(t)
	cc.r.SetReadDeadline(time.Now().Add(10 * time.Second))
	done := serveSync(f.srv, sc)
	c := &raw{t: t, nc: cc, br: bufio.NewReader(cc)}
	c.expect("protocol=tlsmgr_protocol")
	c.send("request", "policy", "cache_type", "smtp").expect(ok + " cachable=1 timeout=3600")
	c.send("request", "seed", "size", "8")
	if got := c.readList(); !strings.HasPrefix(got, ok+" seed=") {
		t.Fatalf("seed reply %q", got)
	}
	if err := f.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	returnsWithin(t, done, 2*time.Second, "Shutdown")
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed by Shutdown: %v", err)
	}
}

package server

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// transport carries one client connection's bytes and bounds every wait
// for its client. There are two: blockingTransport waits in blocking
// system calls, two per request, and takes an OS thread while it waits;
// netpollTransport waits in Go's netpoller, four system calls per
// request, and carries any net.Conn (-S uses pipes). The connection's
// goroutine alone reads and writes; stop and abort may come from any
// goroutine, as long as Close has not been called.
type transport interface {
	// readNext reads the first bytes of the client's next request,
	// waiting for them up to the idle timeout the transport was made
	// with (Config.IPCTimeout), counted from the call; then it fails
	// with os.ErrDeadlineExceeded. stop and abort end the wait.
	readNext(p []byte) (int, error)
	// readBy reads more of a request that has begun, waiting until
	// deadline at most; then, or with the deadline already past, it
	// fails with os.ErrDeadlineExceeded. stop and abort end the wait.
	readBy(p []byte, deadline time.Time) (int, error)
	// beginReply starts a reply, or the announcement: the Writes that
	// follow, up to the next beginReply, wait for the client to take
	// their bytes for at most the write timeout the transport was made
	// with (Config.RequestTimeout) in all; then they fail with
	// os.ErrDeadlineExceeded. abort ends the wait; stop does not.
	beginReply()
	// Write writes all of p, or fails.
	Write(p []byte) (int, error)
	// pending reports whether the client has sent bytes not read yet;
	// false when the transport cannot tell.
	pending() bool
	// stop ends the connection gracefully, letting the request being
	// answered get its reply: a read waiting returns, and reads end. It
	// reports whether they first return everything the client sent
	// before stop, then io.EOF, the client's later writes failing (the
	// transport shuts down its reading side). If not, what was sent but
	// not yet read is lost: every read fails from then on, with
	// os.ErrDeadlineExceeded.
	stop() (keepsSent bool)
	// abort ends the connection at once: reads and writes waiting or to
	// come fail. Close must still be called.
	abort()
	// Close closes the connection. It may be called more than once.
	Close() error
	// peerUID is the uid of the client's process as the kernel recorded
	// it at connect (SO_PEERCRED).
	peerUID() (uint32, error)
}

var (
	errNoPeer     = errors.New("flush needs a UNIX-domain connection, whose peer the kernel names")
	errNoPeerCred = errors.New("the peer's credentials are not available")
)

// newTransport makes nc's transport: blocking system calls for a UNIX
// socket when Config.BlockingIO is set and fewer than MaxBlocking
// connections use them already, the netpoller otherwise. On error nc is
// to be closed.
func (s *Server) newTransport(nc net.Conn) (transport, error) {
	if uc, ok := nc.(*net.UnixConn); ok && s.cfg.BlockingIO {
		if s.blocking.Add(1) <= int64(s.cfg.MaxBlocking) {
			t, err := newBlockingTransport(uc, s.cfg.IPCTimeout, s.cfg.RequestTimeout,
				func() { s.blocking.Add(-1) })
			if err != nil {
				s.blocking.Add(-1)
				return nil, err
			}
			return t, nil
		}
		s.blocking.Add(-1)
	}
	return newNetpollTransport(nc, s.cfg.IPCTimeout, s.cfg.RequestTimeout), nil
}

// netpollTransport is a connection served through Go's netpoller, with
// deadlines: a read deadline per request (for its first bytes, then one
// for the rest if it did not come in one read) and a write deadline per
// reply.
type netpollTransport struct {
	nc          net.Conn
	idle, write time.Duration
	halfClose   bool // nc can stop reading and keep what was sent
	stopped     atomic.Bool
	deadline    time.Time // the read deadline last set by readBy
}

func newNetpollTransport(nc net.Conn, idle, write time.Duration) *netpollTransport {
	_, half := nc.(interface{ CloseRead() error })
	return &netpollTransport{nc: nc, idle: idle, write: write, halfClose: half}
}

func (t *netpollTransport) readNext(p []byte) (int, error) {
	return t.readBy(p, time.Now().Add(t.idle))
}

func (t *netpollTransport) readBy(p []byte, deadline time.Time) (int, error) {
	if !deadline.Equal(t.deadline) {
		t.deadline = deadline
		t.nc.SetReadDeadline(deadline)
		if !t.halfClose && t.stopped.Load() {
			return 0, os.ErrDeadlineExceeded // see stop
		}
	}
	return t.nc.Read(p)
}

func (t *netpollTransport) beginReply() { t.nc.SetWriteDeadline(time.Now().Add(t.write)) }

func (t *netpollTransport) Write(p []byte) (int, error) { return t.nc.Write(p) }

func (t *netpollTransport) pending() bool {
	sc, ok := t.nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// stop shuts down the reading side where nc can (a socket). A connection
// that cannot (-S on a pipe) gets a read deadline in the past instead;
// readBy looks at stopped after setting a deadline, so it never undoes
// that one.
func (t *netpollTransport) stop() bool {
	t.stopped.Store(true)
	if t.halfClose {
		t.nc.(interface{ CloseRead() error }).CloseRead()
		return true
	}
	t.nc.SetReadDeadline(time.Unix(1, 0))
	return false
}

// abort closes nc: the netpoller wakes its reads and writes, and keeps
// the descriptor until they have returned.
func (t *netpollTransport) abort() {
	t.stopped.Store(true)
	t.nc.Close()
}

func (t *netpollTransport) Close() error { return t.nc.Close() }

func (t *netpollTransport) peerUID() (uint32, error) {
	uc, ok := t.nc.(*net.UnixConn)
	if !ok {
		return 0, errNoPeer
	}
	_, uid, ok := peerCred(uc)
	if !ok {
		return 0, errNoPeerCred
	}
	return uid, nil
}

package server

import (
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/blockio"
)

// blockingConn is a client connection served with blocking system calls:
// a read sleeps in the kernel until the client's next request arrives,
// then the reply is written: two system calls per request, where Go's
// netpoller needs four (a read that finds nothing, epoll_wait, the read,
// the write). The price is an OS thread per client waiting in read; the
// Go runtime hands its P to other goroutines meanwhile. Config.MaxBlocking
// bounds how many connections are served this way.
type blockingConn struct {
	fd        int
	local     net.Addr
	closeOnce atomic.Bool
}

// newBlockingConn takes over uc's socket. The idle limit becomes the
// kernel's receive timeout, set once, instead of a deadline per request;
// the send timeout bounds each wait for the client to take a reply.
func newBlockingConn(uc *net.UnixConn, idle, send time.Duration) (*blockingConn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl", dupErr)
	}
	local := uc.LocalAddr()
	uc.Close() // leaves the netpoller; the duplicate is ours alone
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	for _, o := range []struct {
		opt int
		d   time.Duration
	}{{unix.SO_RCVTIMEO, idle}, {unix.SO_SNDTIMEO, send}} {
		tv := unix.NsecToTimeval(o.d.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, o.opt, &tv); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt", err)
		}
	}
	return &blockingConn{fd: fd, local: local}, nil
}

func (c *blockingConn) Read(p []byte) (int, error)  { return blockio.Read(c.fd, p) }
func (c *blockingConn) Write(p []byte) (int, error) { return blockio.Write(c.fd, p) }

// readBy is Read bounded by a deadline instead of the idle timeout: for
// the rest of a request that did not come in one read.
func (c *blockingConn) readBy(p []byte, deadline time.Time) (int, error) {
	return blockio.ReadBy(c.fd, p, deadline)
}

// CloseRead wakes a read waiting in the kernel. What the client sent
// before stays readable, then reads see end of file, and the client's
// later writes fail (EPIPE) instead of being queued unread; so closing
// after that end of file never resets the client's connection.
func (c *blockingConn) CloseRead() error { return unix.Shutdown(c.fd, unix.SHUT_RD) }

// abort wakes every read and write on the connection, leaving the
// descriptor to the goroutine serving it: closing it here could close a
// descriptor that has reused the number by the time a read starts.
func (c *blockingConn) abort() error { return unix.Shutdown(c.fd, unix.SHUT_RDWR) }

func (c *blockingConn) Close() error {
	if c.closeOnce.Swap(true) {
		return nil
	}
	return unix.Close(c.fd)
}

func (c *blockingConn) LocalAddr() net.Addr  { return c.local }
func (c *blockingConn) RemoteAddr() net.Addr { return c.local }

// Deadlines are the kernel timeouts' business (and readBy's): the server
// does not set them on blocking connections.
func (c *blockingConn) SetDeadline(time.Time) error      { return nil }
func (c *blockingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *blockingConn) SetWriteDeadline(time.Time) error { return nil }

// peerUID is the uid of the process that connected (SO_PEERCRED).
func (b *blockingConn) peerUID() (uint32, bool) {
	cred, err := unix.GetsockoptUcred(b.fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, false
	}
	return cred.Uid, true
}

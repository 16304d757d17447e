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
// Go runtime hands its P to other goroutines meanwhile.
type blockingConn struct {
	fd        int
	local     net.Addr
	shut      atomic.Bool
	closeOnce atomic.Bool
}

// newBlockingConn takes over uc's socket. The idle limit becomes the
// kernel's receive timeout, set once, instead of a deadline per request.
func newBlockingConn(uc *net.UnixConn, idle time.Duration) (*blockingConn, error) {
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
	tv := unix.NsecToTimeval(idle.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	// A client that stops reading must not hold a thread forever either.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	return &blockingConn{fd: fd, local: local}, nil
}

func (c *blockingConn) Read(p []byte) (int, error)  { return blockio.Read(c.fd, p) }
func (c *blockingConn) Write(p []byte) (int, error) { return blockio.Write(c.fd, p) }

func (c *blockingConn) Close() error {
	if c.closeOnce.Swap(true) {
		return nil
	}
	return unix.Close(c.fd)
}

func (c *blockingConn) LocalAddr() net.Addr  { return c.local }
func (c *blockingConn) RemoteAddr() net.Addr { return c.local }

// SetReadDeadline with a time in the past wakes a read waiting in the
// kernel (shutdown ends it with end-of-file): that is how Shutdown stops
// idle clients. Future deadlines are the kernel timeout's business.
func (c *blockingConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && !t.After(time.Now()) && !c.shut.Swap(true) {
		return unix.Shutdown(c.fd, unix.SHUT_RD)
	}
	return nil
}

func (c *blockingConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *blockingConn) SetWriteDeadline(time.Time) error { return nil }

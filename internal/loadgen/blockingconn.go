package loadgen

import (
	"context"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/blockio"
)

// blockingConn is a UNIX stream connection driven by plain blocking
// system calls rather than Go's netpoller. For a load generator with a
// handful of connections this removes a park/wake cycle per request on the
// client side, so the figures say more about the server. Time limits are
// kernel socket timeouts, set once at dial time.
type blockingConn struct {
	fd   int
	addr *net.UnixAddr
	// Until the first bytes arrive, read deadlines hold: the client's
	// bounded wait for the protocol announcement needs one. After that
	// they are ignored, so that requests cost no poll.
	deadline time.Time
	started  bool
}

func dialBlocking(timeout time.Duration) func(context.Context, string) (net.Conn, error) {
	return func(_ context.Context, path string) (net.Conn, error) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("socket", err)
		}
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
				unix.Close(fd)
				return nil, os.NewSyscallError("setsockopt", err)
			}
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			unix.Close(fd)
			return nil, &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: err}
		}
		return &blockingConn{fd: fd, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
	}
}

// Read waits in a raw system call: the load generator's goroutines do
// nothing else, and the wait then costs no scheduler hand-off.
func (c *blockingConn) Read(p []byte) (int, error) {
	if c.started || c.deadline.IsZero() {
		return blockio.ReadRaw(c.fd, p)
	}
	n, err := blockio.ReadBy(c.fd, p, c.deadline)
	c.started = n > 0
	return n, err
}

func (c *blockingConn) Write(p []byte) (int, error) { return blockio.Write(c.fd, p) }

func (c *blockingConn) Close() error                      { return unix.Close(c.fd) }
func (c *blockingConn) LocalAddr() net.Addr               { return c.addr }
func (c *blockingConn) RemoteAddr() net.Addr              { return c.addr }
func (c *blockingConn) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c *blockingConn) SetReadDeadline(t time.Time) error { c.deadline = t; return nil }
func (c *blockingConn) SetWriteDeadline(time.Time) error  { return nil }

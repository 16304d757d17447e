package master

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// StdioConn returns the client connection of a -S server: requests are read
// from stdin and replies written to stdout. The descriptors are duplicated,
// so closing the connection leaves fds 0 and 1 open. When they are sockets
// or pipes they use the Go poller, so deadlines work; on other files (a
// terminal) deadlines are not supported.
func StdioConn() (net.Conn, error) {
	return stdioConnFromFDs(unix.Stdin, unix.Stdout)
}

func stdioConnFromFDs(rfd, wfd int) (net.Conn, error) {
	r, rNonblock, err := pollableDup(rfd, "stdin")
	if err != nil {
		return nil, err
	}
	w, wNonblock, err := pollableDup(wfd, "stdout")
	if err != nil {
		r.Close()
		restoreBlocking(rfd, rNonblock)
		return nil, err
	}
	return &stdioConn{r: r, w: w, rfd: rfd, wfd: wfd, rNonblock: rNonblock, wNonblock: wNonblock}, nil
}

// pollableDup duplicates fd; for a socket or pipe it also sets O_NONBLOCK
// (reported by madeNonblock) so os.NewFile returns a pollable file.
func pollableDup(fd int, name string) (f *os.File, madeNonblock bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, false, fmt.Errorf("%s (fd %d): %w", name, fd, err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("%s (fd %d): dup: %w", name, fd, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK, unix.S_IFIFO:
		flags, err := unix.FcntlInt(uintptr(dup), unix.F_GETFL, 0)
		if err == nil && flags&unix.O_NONBLOCK == 0 {
			if err := unix.SetNonblock(dup, true); err == nil {
				madeNonblock = true
			}
		}
	}
	return os.NewFile(uintptr(dup), name), madeNonblock, nil
}

// restoreBlocking undoes O_NONBLOCK through the original descriptor once
// the duplicate is closed: the flag belongs to the open file, which is
// shared with whoever else holds it (e.g. the process that started us).
func restoreBlocking(fd int, madeNonblock bool) {
	if madeNonblock {
		unix.SetNonblock(fd, false)
	}
}

type stdioConn struct {
	r, w                 *os.File
	rfd, wfd             int // the original descriptors
	rNonblock, wNonblock bool
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *stdioConn) Close() error {
	err := errors.Join(c.r.Close(), c.w.Close())
	restoreBlocking(c.rfd, c.rNonblock)
	restoreBlocking(c.wfd, c.wNonblock)
	return err
}

func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

func (c *stdioConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *stdioConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *stdioConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdin/stdout" }

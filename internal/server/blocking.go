package server

import (
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/blockio"
)

// blockingTransport is a client connection served with blocking system
// calls: a read sleeps in the kernel until the client's next request
// arrives, then the reply is written: two system calls per request, where
// Go's netpoller needs four (a read that finds nothing, epoll_wait, the
// read, the write). The price is an OS thread per client waiting in read;
// the Go runtime hands its P to other goroutines meanwhile.
// Config.MaxBlocking bounds how many connections are served this way.
//
// The idle timeout is the kernel's receive timeout, set once, instead of
// a deadline per request. Waits with a deadline (the rest of a request, a
// reply the client does not take at once) are in poll(2), one system call
// more, and only then.
type blockingTransport struct {
	fd    int
	write time.Duration
	// replyBy is the deadline of the reply being written, once it has
	// had to wait for the client; zero until then.
	replyBy   time.Time
	release   func()
	closeOnce atomic.Bool
}

// newBlockingTransport takes over uc's socket; release is called once it
// is closed. idle becomes the socket's receive timeout; write bounds each
// reply's waits for the client.
func newBlockingTransport(uc *net.UnixConn, idle, write time.Duration, release func()) (*blockingTransport, error) {
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
	return &blockingTransport{fd: fd, write: write, release: release}, nil
}

// readNext is a plain read(2): the receive timeout bounds it. (A signal
// handled by the thread while it waits would start the kernel's timer
// again, but the Go runtime does not signal threads in system calls.)
func (t *blockingTransport) readNext(p []byte) (int, error) { return blockio.Read(t.fd, p) }

func (t *blockingTransport) readBy(p []byte, deadline time.Time) (int, error) {
	return blockio.ReadBy(t.fd, p, deadline)
}

// beginReply costs nothing: the reply's deadline is set only if it has to
// wait, from then on, which bounds the waits for the client all the same.
func (t *blockingTransport) beginReply() { t.replyBy = time.Time{} }

// Write sends without waiting, one system call when the client's socket
// has room, as it does for any reply a client reads at once. Otherwise it
// waits for room in poll(2), until the reply's deadline.
func (t *blockingTransport) Write(p []byte) (int, error) {
	n, err := blockio.Send(t.fd, p)
	if n == len(p) || err != nil {
		return n, err
	}
	if t.replyBy.IsZero() {
		t.replyBy = time.Now().Add(t.write)
	}
	m, err := blockio.WriteBy(t.fd, p[n:], t.replyBy)
	return n + m, err
}

func (t *blockingTransport) pending() bool {
	n, _ := unix.IoctlGetInt(t.fd, unix.SIOCINQ)
	return n > 0
}

// stop wakes a read waiting in the kernel. What the client sent before
// stays readable, then reads see end of file, and the client's later
// writes fail (EPIPE) instead of being queued unread; so closing after
// that end of file never resets the client's connection.
func (t *blockingTransport) stop() bool {
	unix.Shutdown(t.fd, unix.SHUT_RD)
	return true
}

// abort wakes every read and write on the connection, leaving the
// descriptor to the goroutine serving it: closing it here could close a
// descriptor that has reused the number by the time a read starts.
func (t *blockingTransport) abort() { unix.Shutdown(t.fd, unix.SHUT_RDWR) }

func (t *blockingTransport) Close() error {
	if t.closeOnce.Swap(true) {
		return nil
	}
	err := unix.Close(t.fd)
	if t.release != nil {
		t.release()
	}
	return err
}

func (t *blockingTransport) peerUID() (uint32, error) {
	_, uid, ok := peerCredFD(t.fd)
	if !ok {
		return 0, errNoPeerCred
	}
	return uid, nil
}

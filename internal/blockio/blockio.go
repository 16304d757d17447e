// Package blockio reads and writes sockets in blocking mode with plain
// system calls, outside Go's netpoller: what the daemon's connections and
// the load generator's use to save system calls and wake-ups per request.
// Time limits are the kernel's socket timeouts (SO_RCVTIMEO, SO_SNDTIMEO),
// or deadlines (ReadBy, WriteBy).
package blockio

import (
	"io"
	"math"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read reads from fd. A receive timeout is os.ErrDeadlineExceeded, end of
// file io.EOF, and an interrupted call is retried.
func Read(fd int, p []byte) (int, error) { return read(fd, p, unix.Read) }

// ReadRaw is Read through a raw system call: the Go scheduler does not
// hand this thread's P to another thread while it waits and take it back
// after, which costs a wake-up. Only for a few goroutines that do nothing
// else. The scheduler cannot see such a wait and interrupts it after 10ms
// to preempt the goroutine; the wait then goes on as an ordinary system
// call, or the kernel's receive timer, restarted by every retry, would
// never expire.
func ReadRaw(fd int, p []byte) (int, error) { return read(fd, p, rawRead) }

func read(fd int, p []byte, sysRead func(int, []byte) (int, error)) (int, error) {
	for {
		n, err := sysRead(fd, p)
		switch {
		case err == unix.EINTR:
			sysRead = unix.Read
			continue
		case err == unix.EAGAIN:
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// ReadBy is Read with a deadline for data to arrive, whatever the
// socket's receive timeout: it waits in poll(2) first, and a wait that is
// interrupted goes on only for what is left of the time. That is one more
// system call than Read, for reads that need a bound on a total time, such
// as the rest of a request that did not come in one piece.
func ReadBy(fd int, p []byte, deadline time.Time) (int, error) {
	if err := waitBy(fd, unix.POLLIN, deadline); err != nil {
		return 0, err
	}
	// Readable, at end of file or in error: read will not wait.
	return Read(fd, p)
}

// waitBy waits in poll(2) until fd is ready for events, at end of file or
// in error, or until deadline: os.ErrDeadlineExceeded. A wait that is
// interrupted goes on only for what is left of the time.
func waitBy(fd int, events int16, deadline time.Time) error {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		// Rounded up, or the last wait would end early and spin.
		ms := min((left+time.Millisecond-1)/time.Millisecond, math.MaxInt32)
		n, err := unix.Poll(pfd[:], int(ms))
		switch {
		case err == unix.EINTR, err == nil && n == 0:
			continue
		case err != nil:
			return os.NewSyscallError("poll", err)
		}
		return nil
	}
}

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Write writes all of p to fd. A send timeout is os.ErrDeadlineExceeded.
func Write(fd int, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(fd, p[written:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return written, os.ErrDeadlineExceeded
		case err != nil:
			return written, os.NewSyscallError("write", err)
		}
		written += n
	}
	return written, nil
}

// Send writes what it can of p to socket fd without waiting, whether or
// not the socket is in blocking mode (MSG_DONTWAIT): it returns fewer
// than len(p) bytes, and no error, when the socket's send buffer is full.
// A peer that is gone is an error (EPIPE), not a SIGPIPE (MSG_NOSIGNAL).
// When everything fits, which is the rule for small messages, that is one
// system call, as for Write.
func Send(fd int, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := send(fd, p[written:], unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return written, nil
		case err != nil:
			return written, os.NewSyscallError("sendto", err)
		}
		written += n
	}
	return written, nil
}

// WriteBy writes all of p to socket fd by deadline, whatever the socket's
// send timeout: Send, and while the send buffer is full, waits in poll(2)
// for room, each for what is left of the time. When the time is up it
// returns what it wrote and os.ErrDeadlineExceeded.
func WriteBy(fd int, p []byte, deadline time.Time) (int, error) {
	written := 0
	for {
		n, err := Send(fd, p[written:])
		if written += n; written == len(p) || err != nil {
			return written, err
		}
		if err := waitBy(fd, unix.POLLOUT, deadline); err != nil {
			return written, err
		}
	}
}

func send(fd int, p []byte, flags int) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		uintptr(flags), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

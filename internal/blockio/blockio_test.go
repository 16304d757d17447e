package blockio

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	tv := unix.NsecToTimeval(50e6)
	if err := unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

func TestReadWrite(t *testing.T) {
	for name, read := range map[string]func(int, []byte) (int, error){"Read": Read, "ReadRaw": ReadRaw} {
		a, b := socketpair(t)
		if n, err := Write(b, []byte("hello")); n != 5 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		buf := make([]byte, 16)
		if n, err := read(a, buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("%s = %q, %v", name, buf[:n], err)
		}
		if _, err := read(a, buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s with nothing to read = %v, want the receive timeout", name, err)
		}
		unix.Shutdown(b, unix.SHUT_WR)
		if _, err := read(a, buf); err != io.EOF {
			t.Fatalf("%s at end of file = %v, want io.EOF", name, err)
		}
	}
}

func TestWriteError(t *testing.T) {
	a, b := socketpair(t)
	// Shut down, not closed: the cleanup closes b, and a second close could
	// hit a descriptor that has reused its number.
	unix.Shutdown(b, unix.SHUT_RDWR)
	if _, err := Write(a, []byte("x")); err == nil {
		t.Fatal("Write to a closed peer succeeded")
	}
}

func TestReadBy(t *testing.T) {
	a, b := socketpair(t)
	// The socket's receive timeout is longer than the deadline: ReadBy
	// must end at the deadline all the same.
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(a, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	Write(b, []byte("hi"))
	if n, err := ReadBy(a, buf, time.Now().Add(time.Minute)); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("ReadBy with data = %q, %v", buf[:n], err)
	}
	start := time.Now()
	if _, err := ReadBy(a, buf, start.Add(100*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBy with nothing to read = %v, want the deadline", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("ReadBy waited %v for a 100ms deadline", d)
	}
	Write(b, []byte("x"))
	if _, err := ReadBy(a, buf, start); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBy past its deadline = %v, want the deadline", err)
	}
	unix.Shutdown(b, unix.SHUT_WR)
	if n, err := ReadBy(a, buf, time.Now().Add(time.Minute)); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("ReadBy = %q, %v; want the byte left", buf[:n], err)
	}
	if _, err := ReadBy(a, buf, time.Now().Add(time.Minute)); err != io.EOF {
		t.Fatalf("ReadBy at end of file = %v, want io.EOF", err)
	}
}

// TestShutdownReadKeepsQueuedData checks the kernel behaviour Shutdown and
// eviction in the server rely on: after SHUT_RD, what was queued is still
// read, then end of file; the peer's later writes fail instead of being
// queued (and reset on close).
func TestShutdownReadKeepsQueuedData(t *testing.T) {
	a, b := socketpair(t)
	Write(b, []byte("queued"))
	if err := unix.Shutdown(a, unix.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(b, []byte("late")); err == nil {
		t.Fatal("a write after SHUT_RD was taken")
	}
	buf := make([]byte, 16)
	if n, err := Read(a, buf); err != nil || string(buf[:n]) != "queued" {
		t.Fatalf("Read after SHUT_RD = %q, %v; want what was queued", buf[:n], err)
	}
	if _, err := Read(a, buf); err != io.EOF {
		t.Fatalf("Read after the queued data = %v, want io.EOF", err)
	}
}

// TestSend: Send writes what fits without waiting, in a blocking socket
// too, and a peer gone is an error, not a signal.
func TestSend(t *testing.T) {
	a, b := socketpair(t)
	if n, err := Send(b, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("Send = %d, %v", n, err)
	}
	buf := make([]byte, 16)
	if n, err := Read(a, buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	big := make([]byte, 8<<20) // more than any send buffer
	start := time.Now()
	n, err := Send(b, big)
	if err != nil || n == 0 || n == len(big) {
		t.Fatalf("Send of more than fits = %d, %v; want part of it and no error", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Send waited %v", d)
	}
	if n, err := Send(b, []byte("x")); n != 0 || err != nil {
		t.Fatalf("Send to a full buffer = %d, %v; want 0, nil", n, err)
	}
	unix.Shutdown(a, unix.SHUT_RDWR)
	if _, err := Send(b, []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("Send to a peer gone = %v, want EPIPE", err)
	}
}

// TestWriteBy: WriteBy waits for room, and ends at its deadline whatever
// the socket's send timeout.
func TestWriteBy(t *testing.T) {
	a, b := socketpair(t)
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(b, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 4<<20)
	// A reader that takes everything: all of it is written.
	done := make(chan int)
	go func() {
		got, buf := 0, make([]byte, 64<<10)
		for got < len(big) {
			n, err := ReadBy(a, buf, time.Now().Add(10*time.Second))
			if err != nil {
				break
			}
			got += n
		}
		done <- got
	}()
	if n, err := WriteBy(b, big, time.Now().Add(10*time.Second)); n != len(big) || err != nil {
		t.Fatalf("WriteBy to a reader = %d, %v", n, err)
	}
	if got := <-done; got != len(big) {
		t.Fatalf("the reader got %d bytes of %d", got, len(big))
	}
	// Nobody reads: the deadline ends it.
	start := time.Now()
	n, err := WriteBy(b, big, start.Add(100*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == len(big) {
		t.Fatalf("WriteBy with nobody reading = %d, %v; want the deadline", n, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("WriteBy waited %v for a 100ms deadline", d)
	}
	if n, err := WriteBy(b, big, start); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteBy past its deadline to a full buffer = %d, %v; want the deadline", n, err)
	}
	// The peer goes away while WriteBy waits: it fails at once.
	go func() { time.Sleep(50 * time.Millisecond); unix.Shutdown(a, unix.SHUT_RDWR) }()
	start = time.Now()
	if _, err := WriteBy(b, big, start.Add(10*time.Second)); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("WriteBy to a peer gone = %v, want EPIPE", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("WriteBy to a peer gone waited %v", d)
	}
}

package blockio

import (
	"errors"
	"io"
	"os"
	"testing"

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

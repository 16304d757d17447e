package master

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// placeAt duplicates fd onto the descriptor number at, as master(8) does
// with dup2 before exec, and closes it when the test ends (unless taken).
func placeAt(t *testing.T, fd uintptr, at int) {
	t.Helper()
	var st unix.Stat_t
	if unix.Fstat(at, &st) != unix.EBADF {
		t.Fatalf("descriptor %d already in use", at)
	}
	if err := unix.Dup3(int(fd), at, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(at) })
}

// unixListenerFD makes a listening UNIX socket at path and returns a
// duplicate of its descriptor; the original listener is closed without
// removing the socket file.
func unixListenerFD(t *testing.T, path string) *os.File {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return f
}

func roundTrip(t *testing.T, ln net.Listener, network, addr string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = c.Write([]byte("protocol"))
		done <- err
	}()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != "protocol" {
		t.Errorf("read %q", got)
	}
}

func TestInheritedListeners(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "tlsmgr"), filepath.Join(dir, "second")}
	first := unusedFD(t, 50)
	for i, p := range paths {
		placeAt(t, unixListenerFD(t, p).Fd(), first+i)
	}
	lns, err := InheritedListeners(first, len(paths))
	if err != nil {
		t.Fatal(err)
	}
	if len(lns) != len(paths) {
		t.Fatalf("got %d listeners, want %d", len(lns), len(paths))
	}
	for i, ln := range lns {
		roundTrip(t, ln, "unix", paths[i])
	}
	// The inherited descriptors are replaced by close-on-exec duplicates.
	for i := range paths {
		var st unix.Stat_t
		if unix.Fstat(first+i, &st) != unix.EBADF {
			t.Errorf("fd %d still open", first+i)
		}
	}
	for _, ln := range lns {
		ln.Close()
	}
	// The socket files belong to the master: closing must not remove them.
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("socket file removed by Close: %v", err)
		}
	}
}

func TestInheritedTCPListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := unusedFD(t, 50)
	placeAt(t, f.Fd(), fd)
	lns, err := InheritedListeners(fd, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].Close()
	roundTrip(t, lns[0], "tcp", ln.Addr().String())
}

func TestInheritedListenersErrors(t *testing.T) {
	dir := t.TempDir()
	good := unusedFD(t, 50)
	placeAt(t, unixListenerFD(t, filepath.Join(dir, "good")).Fd(), good)

	regular, err := os.Create(filepath.Join(dir, "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])

	bad := good + 1
	for _, c := range []struct {
		name string
		fd   uintptr // placed at bad; 0 leaves bad closed
		want string
	}{
		{"closed", 0, "bad file descriptor"},
		{"regular file", regular.Fd(), "not a socket"},
		{"connected socket", uintptr(pair[0]), "not listening"},
	} {
		var st unix.Stat_t
		if unix.Fstat(bad, &st) != unix.EBADF {
			t.Fatalf("descriptor %d in use", bad)
		}
		if c.fd != 0 {
			if err := unix.Dup3(int(c.fd), bad, unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
		}
		// The good socket comes first: it must survive the failure.
		_, err := InheritedListeners(good, 2)
		unix.Close(bad)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), "fd "+strconv.Itoa(bad)+":") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want one naming fd %d and %q", c.name, err, bad, c.want)
		}
		if unix.Fstat(good, &st) != nil {
			t.Errorf("%s: good fd %d was consumed by a failed call", c.name, good)
		}
	}
}

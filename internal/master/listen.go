package master

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// InheritedListeners returns listeners for the n listening sockets that
// master(8) passed on descriptors first..first+n-1 (normally ListenFD on).
// Each descriptor is duplicated (close-on-exec) and the original closed.
// Closing a returned UNIX-domain listener does not remove its socket file,
// which belongs to the master.
func InheritedListeners(first, n int) ([]net.Listener, error) {
	var listeners []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range listeners {
			ln.Close()
		}
		return nil, err
	}
	for fd := first; fd < first+n; fd++ {
		if err := checkListening(fd); err != nil {
			return fail(err)
		}
	}
	for fd := first; fd < first+n; fd++ {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("listen-fd-%d", fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("listening socket fd %d: %w", fd, err))
		}
		listeners = append(listeners, ln)
	}
	return listeners, nil
}

// checkListening verifies that fd is an open socket in the listening state.
func checkListening(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("listening socket fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("listening socket fd %d: not a socket", fd)
	}
	accepting, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("listening socket fd %d: %w", fd, err)
	}
	if accepting == 0 {
		return fmt.Errorf("listening socket fd %d: socket is not listening", fd)
	}
	return nil
}

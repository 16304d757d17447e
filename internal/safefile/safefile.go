// Package safefile opens the daemon's state files (caches, ticket keys,
// the PRNG exchange file) so that a name planted by whoever controls the
// directory never redirects a write.
//
// The daemon already opens these files with the mail owner's effective
// uid, so the kernel refuses what that account could not write anyway.
// This package is the second line, in the manner of Postfix's safe_open:
// the last component is opened with O_NOFOLLOW, and the open file must be
// a regular file with a single link, owned by the effective uid. A
// symbolic link is followed only if root owns it: only root can have put
// it there, so it is the administrator's choice (moving a cache to
// another disk, say), and what it leads to must pass the same checks.
package safefile

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by every refusal to use a file.
var ErrUnsafe = errors.New("unsafe file")

// UnsafeError says which file was refused and why.
type UnsafeError struct {
	Path string
	Why  string
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("refusing to use %s: %s", e.Path, e.Why)
}

func (e *UnsafeError) Unwrap() error { return ErrUnsafe }

// Open is os.OpenFile for a state file: see the package comment.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := OpenAt(unix.AT_FDCWD, path, flag, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenAt opens name relative to the directory dirFD (unix.AT_FDCWD for
// the working directory), with the checks of Open, and returns the
// descriptor. Errors from the system are *os.PathError, refusals
// *UnsafeError.
func OpenAt(dirFD int, name string, flag int, perm uint32) (int, error) {
	// O_NONBLOCK: opening a FIFO planted in the file's place for writing
	// must not wait for a reader; Check then refuses it.
	flag |= unix.O_CLOEXEC | unix.O_NONBLOCK
	// O_TRUNC would act before the checks: it is applied after them.
	trunc := flag&unix.O_TRUNC != 0
	flag &^= unix.O_TRUNC
	fd, err := openat(dirFD, name, flag|unix.O_NOFOLLOW, perm)
	if err == unix.ELOOP {
		var st unix.Stat_t
		if lerr := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); lerr != nil {
			return -1, &os.PathError{Op: "lstat", Path: name, Err: lerr}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return -1, &os.PathError{Op: "open", Path: name, Err: err}
		}
		if st.Uid != 0 {
			return -1, &UnsafeError{name, fmt.Sprintf("it is a symbolic link owned by uid %d (only links that root made are followed)", st.Uid)}
		}
		fd, err = openat(dirFD, name, flag, perm)
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	if err := Check(fd, name); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "fcntl", Path: name, Err: err}
	}
	if trunc {
		if err := unix.Ftruncate(fd, 0); err != nil {
			unix.Close(fd)
			return -1, &os.PathError{Op: "truncate", Path: name, Err: err}
		}
	}
	return fd, nil
}

func openat(dirFD int, name string, flag int, perm uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirFD, name, flag, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// Check verifies that fd is a regular file with one link, owned by the
// effective uid: what a state file must be before anything is written to
// it.
func Check(fd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	return checkStat(&st, name, os.Geteuid())
}

func checkStat(st *unix.Stat_t, name string, owner int) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &UnsafeError{name, "not a regular file"}
	case st.Nlink > 1:
		// A second name could be anyone's: a hard link to a file of
		// root's would have us write into it.
		return &UnsafeError{name, fmt.Sprintf("it has %d hard links", st.Nlink)}
	case int(st.Uid) != owner:
		return &UnsafeError{name, fmt.Sprintf("it is owned by uid %d, not by uid %d", st.Uid, owner)}
	}
	return nil
}

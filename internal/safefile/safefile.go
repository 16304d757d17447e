// Package safefile is the one way the daemon opens a file that someone
// less trusted than the opener could have named or swapped: its state
// files (caches, the ticket key file, the PRNG exchange file), which live
// in a directory the mail owner controls, and the files of the Redis
// settings (the settings file, its password and seal key files, its CA
// file), which are read as root.
//
// The rule is Postfix's safe_open (util/safe_open.c) for files root
// trusts, with the same checks for every file:
//
//   - The last component is opened with O_NOFOLLOW. A symbolic link there
//     is followed only if root owns it: only root can have made it, so it
//     is the administrator's choice (a cache moved to another disk, a
//     secret kept elsewhere). A link of any other account's is refused
//     whatever it leads to. Where root's link leads to another symbolic
//     link, that one must be root's too, and so on (at most 8 of them):
//     Postfix follows the rest of such a chain unchecked, and whoever can
//     write the directory of a relative link's target could otherwise
//     choose the file. Directories on the way are followed as the
//     administrator set them up.
//   - The open never blocks (O_NONBLOCK, dropped once the file is
//     checked), so a FIFO planted in the file's place is refused rather
//     than waited on, and O_NOCTTY keeps a terminal from becoming ours.
//   - The open file (fstat, not the name) must be a regular file with one
//     link (a second name could be anyone's: a hard link to a file of
//     root's would have it read or written in place of ours; none means
//     it was removed or replaced after the open), owned by one of the
//     Rule's owners, with none of the Rule's forbidden mode bits.
//   - O_TRUNC is applied only after those checks.
//
// With O_CREAT, a link of root's to a file not there yet creates the file
// where the link leads (the administrator moved it before its first use);
// Postfix never creates through a link. No class of file gets a stricter
// rule (refusing root's links too): whoever could plant a link of root's
// could as well change the file.
//
// A file created through O_CREAT gets the effective uid; the zero Rule
// (Open, OpenAt) is a state file's, which must be the effective uid's:
// the daemon opens state files with the mail owner's uid, so the kernel
// already refuses what that account could not do itself, and this is the
// second line.
package safefile

import (
	"errors"
	"fmt"
	"os"
	"strings"

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

// Rule is what an open file must be, besides a regular file with one
// link reached through no symbolic link but root's. The zero Rule is a
// state file's: owned by the effective uid, any mode.
type Rule struct {
	// Owners are the uids that may own the file; none means the
	// effective uid at the time of the open.
	Owners []int
	// Forbid are the permission bits the file must not have: 0o022 for
	// a file nobody else may change, 0o077 for a secret.
	Forbid os.FileMode
	// Need says what the file must be, for the message that refuses one
	// of the wrong owner or mode ("it must be owned by root and writable
	// by nobody else"). Empty: one is made from Owners and Forbid.
	Need string
}

// maxLinks bounds a chain of root's symbolic links, as the kernel bounds
// its own (ELOOP).
const maxLinks = 8

// Open is os.OpenFile for a state file: see the package comment.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	return Rule{}.Open(path, flag, perm)
}

// OpenAt is Rule.OpenAt for a state file.
func OpenAt(dirFD int, name string, flag int, perm uint32) (int, error) {
	return Rule{}.OpenAt(dirFD, name, flag, perm)
}

// Open is os.OpenFile with the checks of the package comment and of r.
func (r Rule) Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := r.OpenAt(unix.AT_FDCWD, path, flag, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenAt opens name relative to the directory dirFD (unix.AT_FDCWD for
// the working directory) with the checks of the package comment and of
// r, and returns the descriptor. Errors from the system are
// *os.PathError, refusals *UnsafeError; both name the file as given.
func (r Rule) OpenAt(dirFD int, name string, flag int, perm uint32) (int, error) {
	flag |= unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	// O_TRUNC would act before the checks: it is applied after them.
	trunc := flag&unix.O_TRUNC != 0
	flag &^= unix.O_TRUNC
	fd, err := openNoLink(dirFD, name, flag, perm)
	if err != nil {
		return -1, err
	}
	if err := r.check(fd, name); err != nil {
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

// openNoLink opens name with O_NOFOLLOW, following only root's symbolic
// links in its place, and the link each of them names in turn.
func openNoLink(dirFD int, name string, flag int, perm uint32) (int, error) {
	at := name // the name now opened: name, or where root's links lead
	for links := 0; ; links++ {
		fd, err := openat(dirFD, at, flag|unix.O_NOFOLLOW, perm)
		if err == nil {
			return fd, nil
		}
		// O_NOFOLLOW fails with ELOOP on a link (EMLINK on FreeBSD), and
		// ELOOP also for a loop among the directories on the way: only
		// the link itself tells them apart.
		if err != unix.ELOOP && err != unix.EMLINK {
			return -1, &os.PathError{Op: "open", Path: name, Err: err}
		}
		target, uid, isLink, lerr := readLink(dirFD, at)
		switch {
		case lerr != nil:
			return -1, &os.PathError{Op: "readlink", Path: name, Err: lerr}
		case !isLink:
			return -1, &os.PathError{Op: "open", Path: name, Err: err}
		case uid != 0 && at == name:
			return -1, &UnsafeError{name, fmt.Sprintf("it is a symbolic link owned by uid %d (only links that root made are followed)", uid)}
		case uid != 0:
			return -1, &UnsafeError{name, fmt.Sprintf("root's symbolic link leads to %s, a symbolic link owned by uid %d (only links that root made are followed)", at, uid)}
		case links == maxLinks:
			return -1, &os.PathError{Op: "open", Path: name, Err: unix.ELOOP}
		}
		at = resolve(at, target)
	}
}

// resolve is where the link at name, with contents target, leads: a
// relative target is relative to the link's directory. Nothing is
// cleaned: "a/../b" is the kernel's to resolve, for a may be a link.
func resolve(name, target string) string {
	if strings.HasPrefix(target, "/") {
		return target
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i+1] + target
	}
	return target
}

func openat(dirFD int, name string, flag int, perm uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirFD, name, flag, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// check verifies the open file against r.
func (r Rule) check(fd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	return r.checkStat(&st, name)
}

func (r Rule) checkStat(st *unix.Stat_t, name string) error {
	owners := r.Owners
	if len(owners) == 0 {
		owners = []int{os.Geteuid()}
	}
	mode := os.FileMode(st.Mode & 0o7777)
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &UnsafeError{name, "it is not a regular file (it is " + fileType(uint32(st.Mode)) + ")"}
	case st.Nlink == 0:
		// Unlinked between the open and the fstat: removed, or another
		// file renamed over it. What is open is no longer the file at
		// name, and whatever is there now was never checked.
		return &UnsafeError{name, "it was removed or replaced while being opened"}
	case st.Nlink != 1:
		return &UnsafeError{name, fmt.Sprintf("it has %d hard links; it must have one", st.Nlink)}
	case !ownedBy(int(st.Uid), owners) || mode&r.Forbid&0o7777 != 0:
		need := r.Need
		if need == "" {
			need = needOf(owners, r.Forbid)
		}
		return &UnsafeError{name, fmt.Sprintf("it is owned by uid %d with mode %04o; %s", st.Uid, mode, need)}
	}
	return nil
}

func ownedBy(uid int, owners []int) bool {
	for _, o := range owners {
		if o == uid {
			return true
		}
	}
	return false
}

// needOf says what Owners and Forbid require.
func needOf(owners []int, forbid os.FileMode) string {
	var who []string
	for i, o := range owners {
		switch {
		case ownedBy(o, owners[:i]):
			// listed twice (root's uid as the effective one, say)
		case o == 0:
			who = append(who, "root")
		default:
			who = append(who, fmt.Sprintf("uid %d", o))
		}
	}
	need := "it must be owned by " + strings.Join(who, " or ")
	switch forbid &= 0o7777; forbid {
	case 0:
	case 0o022:
		need += " and writable by nobody else"
	case 0o077:
		need += " and give no access to group or others (e.g. mode 0600)"
	default:
		need += fmt.Sprintf(" and have none of the mode bits %04o", forbid)
	}
	return need
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("of type %#o", mode&unix.S_IFMT)
}

package master

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"syscall"
)

// LookupUser returns the uid and primary gid of the named account. Call it
// before chroot: the password file is out of reach afterwards.
func LookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return -1, -1, fmt.Errorf("unknown user: %s", name)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return -1, -1, fmt.Errorf("user %s: bad uid %q", name, u.Uid)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return -1, -1, fmt.Errorf("user %s: bad gid %q", name, u.Gid)
	}
	return uid, gid, nil
}

// Jail restricts the process as a Postfix daemon does after its pre-jail
// initialisation: with chroot, enter root and make "/" the working
// directory; with drop, give up root for good (supplementary groups become
// just gid, then the real/effective/saved gid and uid). Go applies the
// credential changes to every thread of the process. Files must already be
// open: paths outside root are unreachable afterwards.
//
// Like Postfix, it refuses a mail owner with uid or gid 0, and it checks
// afterwards that the change took and that root cannot be regained. After
// an error the process may be half-restricted: the caller must exit.
func Jail(root string, uid, gid int, chroot, drop bool) error {
	if drop {
		if uid == 0 {
			return errors.New("refusing to run as mail owner with privileged user ID 0")
		}
		if gid == 0 {
			return errors.New("refusing to run as mail owner with privileged group ID 0")
		}
		if uid < 0 || gid < 0 {
			return fmt.Errorf("invalid mail owner uid %d gid %d", uid, gid)
		}
	}
	privMu.Lock()
	defer privMu.Unlock()
	if chroot {
		if err := syscall.Chroot(root); err != nil {
			return fmt.Errorf("chroot(%s): %w", root, err)
		}
		if err := syscall.Chdir("/"); err != nil {
			return fmt.Errorf("chdir(/): %w", err)
		}
	}
	if !drop {
		return nil
	}
	// An earlier AsUser may have left the effective uid changed.
	if syscall.Geteuid() != 0 {
		if err := syscall.Seteuid(0); err != nil {
			return fmt.Errorf("seteuid(0): %w", err)
		}
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups(%d): %w", gid, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid(%d): %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid(%d): %w", uid, err)
	}
	return verifyDropped(uid, gid)
}

func verifyDropped(uid, gid int) error {
	if u, eu := syscall.Getuid(), syscall.Geteuid(); u != uid || eu != uid {
		return fmt.Errorf("privilege drop failed: uid %d euid %d, want %d", u, eu, uid)
	}
	if g, eg := syscall.Getgid(), syscall.Getegid(); g != gid || eg != gid {
		return fmt.Errorf("privilege drop failed: gid %d egid %d, want %d", g, eg, gid)
	}
	if groups, err := syscall.Getgroups(); err != nil || !slices.Equal(groups, []int{gid}) {
		return fmt.Errorf("privilege drop failed: groups %v, want [%d]", groups, gid)
	}
	if syscall.Setuid(0) == nil {
		return errors.New("privilege drop failed: root could be regained")
	}
	return nil
}

// privMu serialises credential changes made by this package.
var privMu sync.Mutex

// AsUser runs fn with the effective uid and gid (and the group list) of
// the given account, then switches back to root, so that files fn creates
// belong to that account. The switch is process-wide: other goroutines
// run with the same credentials meanwhile, so use it during start-up. fn
// must not call AsUser or Jail. When not running as root it just calls fn.
func AsUser(uid, gid int, fn func() error) error {
	privMu.Lock()
	defer privMu.Unlock()
	if syscall.Geteuid() != 0 {
		return fn()
	}
	egid := syscall.Getegid()
	groups, err := syscall.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	restore := func() error {
		return errors.Join(
			wrap("seteuid(0)", syscall.Seteuid(0)),
			wrap(fmt.Sprintf("setegid(%d)", egid), syscall.Setegid(egid)),
			wrap("setgroups", syscall.Setgroups(groups)))
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups(%d): %w", gid, err)
	}
	if err := syscall.Setegid(gid); err != nil {
		return errors.Join(fmt.Errorf("setegid(%d): %w", gid, err), restore())
	}
	if err := syscall.Seteuid(uid); err != nil {
		return errors.Join(fmt.Errorf("seteuid(%d): %w", uid, err), restore())
	}
	fnErr := func() error {
		defer func() {
			if p := recover(); p != nil {
				restore()
				panic(p)
			}
		}()
		return fn()
	}()
	if err := restore(); err != nil {
		return errors.Join(fnErr, fmt.Errorf("restoring root privileges: %w", err))
	}
	return fnErr
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

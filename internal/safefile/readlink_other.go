//go:build !linux

package safefile

import "golang.org/x/sys/unix"

// readLink reports whether name (relative to dirFD) is a symbolic link,
// and then its owner and contents. Without Linux's O_PATH the link is
// looked up twice around the read, and the two must be the same link, so
// that a name swapped meanwhile is not followed (a swap and a swap back
// between the two are not seen).
func readLink(dirFD int, name string) (target string, uid uint32, isLink bool, err error) {
	var before, after unix.Stat_t
	if err := unix.Fstatat(dirFD, name, &before, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", 0, false, err
	}
	if before.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", 0, false, nil
	}
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirFD, name, buf)
		if err != nil {
			return "", 0, false, err
		}
		if n < size {
			target = string(buf[:n])
			break
		}
	}
	if err := unix.Fstatat(dirFD, name, &after, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", 0, false, err
	}
	if after.Dev != before.Dev || after.Ino != before.Ino || after.Uid != before.Uid {
		return "", 0, false, unix.EAGAIN
	}
	return target, before.Uid, true, nil
}

package safefile

import "golang.org/x/sys/unix"

// readLink reports whether name (relative to dirFD) is a symbolic link,
// and then its owner and contents. Both come from one descriptor of the
// link itself (O_PATH), so that the contents read are those of the link
// whose owner was checked, even if the name is swapped meanwhile.
func readLink(dirFD int, name string) (target string, uid uint32, isLink bool, err error) {
	fd, err := openat(dirFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", 0, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", 0, false, nil
	}
	// readlinkat of an O_PATH descriptor and an empty name reads the
	// link itself.
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", 0, false, err
		}
		if n < size {
			return string(buf[:n]), st.Uid, true, nil
		}
	}
}

package prng

import "golang.org/x/sys/unix"

// moveIntoPlace gives the file tmp the name base unless base exists
// (EEXIST), in one step where the file system can (renameat2 with
// RENAME_NOREPLACE): a link and an unlink leave a file with two links to
// a process killed between them, and safefile refuses such a file.
func moveIntoPlace(dirFD int, tmp, base string) error {
	err := unix.Renameat2(dirFD, tmp, dirFD, base, unix.RENAME_NOREPLACE)
	switch err {
	case unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP:
		return linkIntoPlace(dirFD, tmp, base)
	case nil:
		return nil
	}
	unix.Unlinkat(dirFD, tmp, 0)
	return err
}

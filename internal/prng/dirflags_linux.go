package prng

import "golang.org/x/sys/unix"

// dirOpenFlags opens a directory only as a handle for openat, linkat and
// unlinkat: O_PATH needs no read permission on the directory.
const dirOpenFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC

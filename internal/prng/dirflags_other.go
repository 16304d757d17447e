//go:build !linux

package prng

import "golang.org/x/sys/unix"

// dirOpenFlags opens a directory as a handle for openat, linkat and
// unlinkat.
const dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC

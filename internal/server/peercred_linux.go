package server

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred is the pid and uid of the process that connected uc
// (SO_PEERCRED), as the kernel recorded them at connect.
func peerCred(uc *net.UnixConn) (pid int32, uid uint32, ok bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	if err := rc.Control(func(fd uintptr) { pid, uid, ok = peerCredFD(int(fd)) }); err != nil {
		return 0, 0, false
	}
	return pid, uid, ok
}

// peerCredFD is peerCred of the socket fd.
func peerCredFD(fd int) (pid int32, uid uint32, ok bool) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, 0, false
	}
	return cred.Pid, cred.Uid, true
}

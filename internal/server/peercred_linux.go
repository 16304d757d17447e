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
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return 0, 0, false
	}
	return cred.Pid, cred.Uid, true
}

package server

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fdReserve is the file descriptors the daemon needs besides its client
// connections: standard streams, listeners, master(8)'s status and
// trigger streams, the log socket, cache and key files, the PRNG files, and
// connections being taken past a full table (eviction) or finishing after
// it.
const fdReserve = 64

// CheckLimits checks that the process may open enough files for a client
// table of maxClients connections (tlsmgr_client_limit), each holding one
// descriptor. Without them accept fails once the table is partly full,
// and nothing is ever evicted to make room. Call it at start-up, after
// the runtime has raised the soft RLIMIT_NOFILE to the hard limit (Go does
// that before main).
func CheckLimits(maxClients int) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return os.NewSyscallError("getrlimit", err)
	}
	return checkLimits(maxClients, rl.Cur)
}

func checkLimits(maxClients int, nofile uint64) error {
	if maxClients < 0 {
		return fmt.Errorf("tlsmgr_client_limit = %d: must not be negative", maxClients)
	}
	need := uint64(maxClients) + fdReserve
	if need <= nofile {
		return nil
	}
	fix := "raise the process's hard limit on open files"
	if nofile > fdReserve {
		fix = fmt.Sprintf("lower tlsmgr_client_limit to %d or less, or %s", nofile-fdReserve, fix)
	}
	return fmt.Errorf("tlsmgr_client_limit = %d needs %d open files, more than the %d this process may open (RLIMIT_NOFILE): %s",
		maxClients, need, nofile, fix)
}

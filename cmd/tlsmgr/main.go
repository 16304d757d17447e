// Command tlsmgr is a drop-in replacement for Postfix's tlsmgr(8): the TLS
// session cache and PRNG manager. Under master(8) it takes the same
// command line as Postfix's; standalone, run it with -listen PATH.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/gotlsmgr/tlsmgr/internal/daemon"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
)

func main() {
	// For performance work: a CPU profile of the whole run.
	if path := os.Getenv("TLSMGR_CPUPROFILE"); path != "" {
		f, err := safefile.Open(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "tlsmgr: fatal: TLSMGR_CPUPROFILE: %v\n", err)
			os.Exit(1)
		}
		code := daemon.Main(os.Args[1:])
		pprof.StopCPUProfile()
		f.Close()
		os.Exit(code)
	}
	os.Exit(daemon.Main(os.Args[1:]))
}

// Command tlsmgr is a drop-in replacement for Postfix's tlsmgr(8): the TLS
// session cache and PRNG manager. Under master(8) it takes the same
// command line as Postfix's; standalone, run it with -listen PATH.
package main

import (
	"os"

	"github.com/gotlsmgr/tlsmgr/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}

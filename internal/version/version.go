// Package version is the one place where tlsmgr's version is defined:
// the daemon logs it at start-up and reports it in its stats, and
// tlsmgrctl prints it next to the daemon's.
//
// A release build sets it with the linker:
//
//	go build -ldflags "-X github.com/gotlsmgr/tlsmgr/internal/version.Version=1.2.0" ./cmd/...
//
// (make VERSION=1.2.0 does that). Otherwise it is the module version the
// go command stamped into the binary (a tag, or a pseudo-version naming
// the commit, "+dirty" for a modified tree), and "devel" when the binary
// carries no such information (go run, test binaries).
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set with -ldflags "-X"; empty means: ask the build info.
var Version string

var fromBuild = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "" {
			return "devel-" + rev[:min(len(rev), 12)] + dirty
		}
	}
	return "devel"
})

// String is the version of this binary, never empty.
func String() string {
	if Version != "" {
		return Version
	}
	return fromBuild()
}

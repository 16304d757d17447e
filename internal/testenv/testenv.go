// Package testenv is the one rule for tests that need something a machine
// may lack (root, a Debian package): run by hand without it, such a test
// skips; under CI (CI=true), which installs everything, it fails, so that
// a skip can never hide a missing part.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test for lack of what: a skip by hand, a failure in CI.
func Missing(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI must provide: %s", what)
	}
	t.Skipf("needs %s", what)
}

// NeedRoot stops the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root")
	}
}

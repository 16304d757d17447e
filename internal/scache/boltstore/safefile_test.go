package boltstore

import (
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
)

// The cache file is opened by safefile's rule: a link planted by another
// account than root, a FIFO or a directory in its place is refused, a
// link of root's followed.
func TestOpenedSafely(t *testing.T) {
	open := func(path string) error {
		s, err := Open(path, smallLimits, Options{})
		if err == nil {
			s.Close()
		}
		return err
	}
	safefiletest.Run(t, safefiletest.Class{Use: open})
}

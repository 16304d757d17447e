package prng

import (
	"crypto/rand"
	"os"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
)

// The exchange file is opened by safefile's rule: a link planted by
// another account than root, a FIFO or a directory in its place is
// refused, a link of root's followed.
func TestExchangeFileOpenedSafely(t *testing.T) {
	safefiletest.Run(t, safefiletest.Class{
		Make: func(t *testing.T, path string) {
			b := make([]byte, ExchangeFileSize)
			rand.Read(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		Use: func(path string) error {
			m, err := testOpen(Options{ExchangeFile: path, Clock: newFakeClock()})
			if err == nil {
				m.Close()
			}
			return err
		},
	})
}

package prng

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// TestExchangeFileAnyOversizeTrimmed: an exchange file longer than 1024
// bytes, by however little, is cut to 1024 by the first update.
func TestExchangeFileAnyOversizeTrimmed(t *testing.T) {
	for _, size := range []int{ExchangeFileSize + 1, ExchangeFileSize + 500, 2 * ExchangeFileSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "prng_exch")
			if err := os.WriteFile(path, bytes.Repeat([]byte{3}, size), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := testOpen(Options{ExchangeFile: path, Clock: newFakeClock()})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			checkExchangeFile(t, path)
		})
	}
}

// TestExchangeFileAnyOtherModeMadeExact: the exchange file is made
// exactly 0600 (with a warning) whatever other mode it has, also one
// with no group or other access that is not 0600.
func TestExchangeFileAnyOtherModeMadeExact(t *testing.T) {
	for _, mode := range []os.FileMode{0o400, 0o700, 0o200, 0o640} {
		t.Run(fmt.Sprintf("%04o", uint32(mode)), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "prng_exch")
			if err := os.WriteFile(path, bytes.Repeat([]byte{7}, ExchangeFileSize), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			log := &testlog.Recorder{}
			m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger(), Clock: newFakeClock()})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			checkExchangeFile(t, path)
			if want := fmt.Sprintf("was mode %04o; making it 0600", uint32(mode)); log.Count("", want) != 1 {
				t.Fatalf("want one warning %q, got %q", want, log.String())
			}
		})
	}
}

// TestReseedsCounted: every read of the source counted as entropy is a
// reseed in the stats, the one at Open included.
func TestReseedsCounted(t *testing.T) {
	m, err := testOpen(Options{Source: "dev:/dev/urandom", Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := m.Stats(); st.Reseeds != 1 || st.LastReseed.IsZero() {
		t.Fatalf("after Open: %d reseeds (last %v), want 1", st.Reseeds, st.LastReseed)
	}
	for range 3 {
		m.reseedEvent()
	}
	if st := m.Stats(); st.Reseeds != 4 || st.HealthFailures != 0 {
		t.Fatalf("after three reseed events: %d reseeds, %d health failures; want 4, 0", st.Reseeds, st.HealthFailures)
	}
}

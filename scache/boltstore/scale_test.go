package boltstore

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/scache"
)

// The 1,000,000-entry measurements run only with TLSMGR_SCALE=1: building
// the file takes a while and about 1 GB of disk.
func needScale(t testing.TB) {
	if os.Getenv("TLSMGR_SCALE") != "1" {
		t.Skip("set TLSMGR_SCALE=1 to run the 1,000,000-entry measurements")
	}
}

const (
	scaleEntries = 1_000_000
	scaleSession = 512
)

var scaleLimits = scache.Limits{MaxEntries: scaleEntries, MaxBytes: 4 << 30}

func buildScaleFile(t testing.TB, path string) {
	t.Helper()
	s := openBench(t, path, scaleLimits)
	began := time.Now()
	bulkFill(t, s, 0, scaleEntries, scaleSession, time.Now().Add(-time.Hour))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d entries in %v; file %d MB", scaleEntries, time.Since(began).Round(time.Millisecond), fileSize(t, path)>>20)
}

// TestScaleOpen builds a 1M-entry file, then opens it in a fresh process
// (so that the building does not count) and reports the open time and
// RssAnon, memory beyond the page cache.
func TestScaleOpen(t *testing.T) {
	if path := os.Getenv("TLSMGR_SCALE_CHILD"); path != "" {
		scaleChild(t, path)
		return
	}
	needScale(t)
	path := filepath.Join(t.TempDir(), "cache.db")
	buildScaleFile(t, path)
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleOpen$", "-test.v")
	cmd.Env = append(os.Environ(), "TLSMGR_SCALE_CHILD="+path)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

func scaleChild(t *testing.T, path string) {
	before := rssAnon(t)
	began := time.Now()
	s, err := Open(path, scaleLimits, Options{Logger: failOnWarn{t}})
	if err != nil {
		t.Fatal(err)
	}
	openTime := time.Since(began)
	afterOpen := rssAnon(t)
	for i := 0; i < scaleEntries; i += 997 {
		if _, err := s.Get(ctx, benchID(i)); err != nil {
			t.Fatalf("Get(%d): %v", i, err)
		}
	}
	afterGets := rssAnon(t)
	st, _ := s.Stats(ctx)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("open of %d entries: %v; RssAnon %d MB before, %d MB after open, %d MB after 1000 Gets; Go heap in use %d MB",
		st.Entries, openTime.Round(time.Millisecond), before>>20, afterOpen>>20, afterGets>>20, ms.HeapInuse>>20)
	if st.Entries != scaleEntries {
		t.Errorf("Entries = %d", st.Entries)
	}
	if openTime > 2*time.Second {
		t.Errorf("open took %v, want <= 2s", openTime)
	}
	if afterGets > 100<<20 {
		t.Errorf("RssAnon %d MB, want <= 100 MB", afterGets>>20)
	}
	s.Close()
	debug.FreeOSMemory()
}

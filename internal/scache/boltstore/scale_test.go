package boltstore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
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

// BenchmarkScaleOpen builds a 1M-entry file, then opens it in fresh
// processes (so that the building does not count) and reports the open
// time and RssAnon, memory beyond the page cache: once after a clean
// Close, and once after a process that wrote to it exited without closing
// (a crash: bbolt then rebuilds its freelist by walking the file). It is a
// benchmark so that it runs only when asked for: TLSMGR_SCALE=1 go test
// -run '^$' -bench ScaleOpen -benchtime 1x ./internal/scache/boltstore
func BenchmarkScaleOpen(b *testing.B) {
	needScale(b)
	path := filepath.Join(b.TempDir(), "cache.db")
	buildScaleFile(b, path)
	for _, crash := range []string{"1", "0"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestScaleOpenChild$", "-test.v")
		cmd.Env = append(os.Environ(), "TLSMGR_SCALE_CHILD="+path, "TLSMGR_SCALE_CRASH="+crash)
		out, err := cmd.CombinedOutput()
		b.Logf("child:\n%s", out)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestScaleOpenChild is BenchmarkScaleOpen's child process; run by hand
// or in CI it has nothing to do, and skips.
func TestScaleOpenChild(t *testing.T) {
	path := os.Getenv("TLSMGR_SCALE_CHILD")
	if path == "" {
		t.Skip("BenchmarkScaleOpen's child process: runs only under it (TLSMGR_SCALE_CHILD unset)")
	}
	scaleChild(t, path, os.Getenv("TLSMGR_SCALE_CRASH") == "1")
}

// scaleChild opens the file and measures; with crash it then writes and
// exits without Close, leaving the file as a killed daemon would.
func scaleChild(t *testing.T, path string, crash bool) {
	before := rssAnon(t)
	began := time.Now()
	s, err := Open(path, scaleLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatal(err)
	}
	openTime := time.Since(began)
	afterOpen := rssAnon(t)
	for i := 0; i < scaleEntries; i += 997 {
		if _, err := s.Get(ctx, benchID(i)); err != nil && !errors.Is(err, scache.ErrNotFound) {
			t.Fatalf("Get(%d): %v", i, err)
		}
	}
	afterGets := rssAnon(t)
	st, _ := s.Stats(ctx)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// The first child finds the file as the builder closed it; the second
	// finds it as the first left it.
	how := "after a clean Close"
	if !crash {
		how = "after a crash"
	}
	t.Logf("open of %d entries %s: %v; RssAnon %d MB before, %d MB after open, %d MB after 1000 Gets; Go heap in use %d MB",
		st.Entries, how, openTime.Round(time.Millisecond), before>>20, afterOpen>>20, afterGets>>20, ms.HeapInuse>>20)
	if st.Entries < scaleEntries-1 {
		t.Errorf("Entries = %d", st.Entries)
	}
	if openTime > 2*time.Second {
		t.Errorf("open took %v, want <= 2s", openTime)
	}
	if afterGets > 100<<20 {
		t.Errorf("RssAnon %d MB, want <= 100 MB", afterGets>>20)
	}
	if crash {
		if _, err := s.Delete(ctx, benchID(0)); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		os.Exit(0) // no Close
	}
	s.Close()
	debug.FreeOSMemory()
}

// BenchmarkSweepLatency measures the latency of foreground lookups and
// updates in a 1,000,000-entry store, alone and while the expiry sweep
// deletes those entries in a tight loop of Expire calls of 25 or 100
// entries (harsher than the daemon, which sweeps between requests). Run
// with -benchtime=10000x, so that the sweeps do not run out of entries;
// it logs the p99 ratios.
func BenchmarkSweepLatency(b *testing.B) {
	needScale(b)
	path := filepath.Join(b.TempDir(), "cache.db")
	buildScaleFile(b, path) // written an hour ago
	s := openBench(b, path, scache.Limits{MaxEntries: 2 * scaleEntries, MaxBytes: 8 << 30})
	defer s.Close()
	type result struct{ get, put time.Duration }
	results := map[int]result{}
	round := 0
	for _, batch := range []int{0, 25, 100} {
		name := "quiet"
		if batch > 0 {
			name = fmt.Sprintf("sweep%d", batch)
		}
		b.Run(name, func(b *testing.B) {
			stop, stopped := make(chan struct{}), make(chan struct{})
			var swept, calls, sweepTime atomic.Int64
			go func() {
				defer close(stopped)
				for batch > 0 {
					select {
					case <-stop:
						return
					default:
					}
					began := time.Now()
					n, more, err := s.Expire(ctx, time.Now().Add(-time.Minute), batch, nil)
					sweepTime.Add(int64(time.Since(began)))
					calls.Add(1)
					swept.Add(int64(n))
					if err != nil || !more {
						return
					}
				}
			}()
			session := benchSession(0, 512)
			gets := make([]time.Duration, 0, b.N/2+1)
			puts := make([]time.Duration, 0, b.N/2+1)
			round++
			b.ResetTimer()
			for n := range b.N {
				began := time.Now()
				var err error
				if n%2 == 0 {
					_, err = s.Get(ctx, benchID((n*7919)%scaleEntries))
					if errors.Is(err, scache.ErrNotFound) {
						err = nil // already swept
					}
					gets = append(gets, time.Since(began))
				} else {
					err = s.Put(ctx, benchID(scaleEntries+round*b.N+n), scache.Entry{Written: time.Now(), Session: session})
					puts = append(puts, time.Since(began))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			close(stop)
			<-stopped
			p99 := func(d []time.Duration) time.Duration {
				if len(d) == 0 {
					return 0
				}
				slices.Sort(d)
				return d[len(d)*99/100]
			}
			r := result{p99(gets), p99(puts)}
			results[batch] = r
			b.ReportMetric(float64(r.get.Nanoseconds()), "get-p99-ns")
			b.ReportMetric(float64(r.put.Nanoseconds()), "put-p99-ns")
			if c := calls.Load(); c > 0 {
				b.ReportMetric(float64(swept.Load()), "swept")
				b.ReportMetric(float64(sweepTime.Load()/c), "ns/Expire")
			}
		})
	}
	quiet := results[0]
	for _, batch := range []int{25, 100} {
		if r, ok := results[batch]; ok && quiet.get > 0 {
			b.Logf("sweeping %d per Expire: p99 Get %v vs %v quiet (x%.1f), Put %v vs %v (x%.1f)", batch,
				r.get, quiet.get, float64(r.get)/float64(quiet.get), r.put, quiet.put, float64(r.put)/float64(quiet.put))
		}
	}
}

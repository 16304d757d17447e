package loadgen

import (
	"context"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
)

// startServer serves tlsmgr with smtpd and smtp caches (lmtp disabled)
// and returns it and its socket path.
func startServer(t *testing.T) (*servertest.Server, string) {
	s := servertest.Start(t, "")
	return s, s.Path
}

// stat reads a counter of srv, or MaxUint64 when it is missing.
func stat(srv *servertest.Server, name string) uint64 {
	n, err := strconv.ParseUint(srv.Stat(name), 10, 64)
	if err != nil {
		return math.MaxUint64
	}
	return n
}

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]int
	}{
		{"lookup=60,update=20,seed=20", map[string]int{"lookup": 60, "update": 20, "seed": 20}},
		{"lookup", map[string]int{"lookup": 1}},
		{"tktkey,policy=3", map[string]int{"tktkey": 1, "policy": 3}},
		{"lookup=2, delete=1 ,", map[string]int{"lookup": 2, "delete": 1}},
		{"lookup,lookup=2", map[string]int{"lookup": 3}},
		{"seed=0,update=5", map[string]int{"seed": 0, "update": 5}},
	} {
		got, err := ParseMix(tc.in)
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"bogus=1", `unknown op "bogus"`},
		{"lookup=1,Lookup=1", `unknown op "Lookup"`},
		{"=5", `unknown op ""`},
		{"lookup=x", `bad weight "x" for lookup`},
		{"lookup=-1", `bad weight "-1" for lookup`},
		{"lookup=1.5", `bad weight`},
		{"", "empty"},
		{" , ,", "empty"},
		{"lookup=0", "empty"},
		{"lookup=0,seed=0", "empty"},
	} {
		got, err := ParseMix(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseMix(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.want)
		}
	}
}

func checkPercentiles(t *testing.T, what string, p50, p99, p999 time.Duration) {
	t.Helper()
	if p50 <= 0 || p50 > p99 || p99 > p999 {
		t.Errorf("%s: percentiles p50 %v p99 %v p999 %v not ordered 0 < p50 <= p99 <= p999", what, p50, p99, p999)
	}
}

func TestRun(t *testing.T) {
	mixText := "lookup=50,update=20,seed=10,policy=10,delete=5,tktkey=5"
	mix, err := ParseMix(mixText)
	if err != nil {
		t.Fatal(err)
	}
	for _, netpoll := range []bool{false, true} {
		t.Run(fmt.Sprint("NetPoll=", netpoll), func(t *testing.T) {
			srv, path := startServer(t)
			const prefill = 300
			res, err := Run(context.Background(), Config{
				Socket: path, Mix: mix, Connections: 2, Duration: 300 * time.Millisecond,
				Payload: 200, Prefill: prefill, NetPoll: netpoll,
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("\n%s", res)
			if res.Requests == 0 {
				t.Fatal("no requests")
			}
			if res.Errors != 0 || res.FirstError != nil {
				t.Errorf("%d errors, first %v", res.Errors, res.FirstError)
			}
			if res.Elapsed < 300*time.Millisecond || res.Elapsed > 5*time.Second {
				t.Errorf("Elapsed = %v, want about 300ms", res.Elapsed)
			}
			if want := float64(res.Requests) / res.Elapsed.Seconds(); math.Abs(res.PerSecond-want) > 1e-6*want {
				t.Errorf("PerSecond = %v, want %v", res.PerSecond, want)
			}
			checkPercentiles(t, "all", res.P50, res.P99, res.P999)

			total := 0
			for _, w := range mix {
				total += w
			}
			var sum uint64
			seen := map[string]bool{}
			for _, o := range res.Ops {
				seen[o.Op] = true
				sum += o.Count
				checkPercentiles(t, o.Op, o.P50, o.P99, o.P999)
				if o.Errors != 0 {
					t.Errorf("%s: %d errors", o.Op, o.Errors)
				}
				// The count is binomial(N, w/total): allow five standard deviations.
				p := float64(mix[o.Op]) / float64(total)
				n := float64(res.Requests)
				if dev := math.Abs(float64(o.Count) - n*p); dev > 5*math.Sqrt(n*p*(1-p))+5 {
					t.Errorf("%s: %d of %d requests, expected about %.0f", o.Op, o.Count, res.Requests, n*p)
				}
				switch o.Op {
				case "lookup":
					// Every lookup draws from the prefilled ids.
					if o.Misses != 0 {
						t.Errorf("lookup: %d misses, want 0 (every id was prefilled)", o.Misses)
					}
				case "update", "seed", "policy", "tktkey":
					if o.Misses != 0 {
						t.Errorf("%s: %d misses", o.Op, o.Misses)
					}
				}
			}
			if sum != res.Requests {
				t.Errorf("per-op counts add up to %d, Requests = %d", sum, res.Requests)
			}
			if !seen["lookup"] || !seen["update"] {
				t.Errorf("ops missing from the result: %v", res.Ops)
			}
			for _, o := range res.Ops {
				if mix[o.Op] == 0 {
					t.Errorf("op %s ran but is not in the mix", o.Op)
				}
			}
			// The prefill reached the server.
			if got := stat(srv, "requests_update"); got < prefill {
				t.Errorf("server saw %d updates, want at least the %d of the prefill", got, prefill)
			}
			if got := stat(srv, "smtpd_cache_entries"); got < prefill {
				t.Errorf("server holds %d entries, want at least %d", got, prefill)
			}
			s := res.String()
			for _, want := range []string{"req/s", "p50", "p999", "lookup"} {
				if !strings.Contains(s, want) {
					t.Errorf("String() lacks %q:\n%s", want, s)
				}
			}
		})
	}
}

// Requests made during the warm-up are not counted, and Elapsed covers the
// measured part only.
func TestRunWarmup(t *testing.T) {
	srv, path := startServer(t)
	res, err := Run(context.Background(), Config{
		Socket: path, Mix: map[string]int{"policy": 1}, Connections: 1,
		Warmup: 500 * time.Millisecond, Duration: 150 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("Requests %d, Errors %d", res.Requests, res.Errors)
	}
	// Counting the warm-up would make it 650ms or more.
	if res.Elapsed < 150*time.Millisecond || res.Elapsed >= 600*time.Millisecond {
		t.Errorf("Elapsed = %v, want about the 150ms measured", res.Elapsed)
	}
	// The server also saw the connect-time policy request and the warm-up.
	if got := stat(srv, "requests_policy"); got <= res.Requests+1 {
		t.Errorf("server saw %d policy requests, result counts %d: warm-up requests were counted", got, res.Requests)
	}
}

// Misses are counted as misses, not errors; a disabled cache is an error.
func TestRunMissesAndErrors(t *testing.T) {
	_, path := startServer(t)
	res, err := Run(context.Background(), Config{
		Socket: path, Mix: map[string]int{"lookup": 1, "delete": 1}, Duration: 100 * time.Millisecond, NetPoll: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Errorf("errors: %d (%v)", res.Errors, res.FirstError)
	}
	for _, o := range res.Ops {
		if o.Misses != o.Count || o.Count == 0 {
			t.Errorf("%s on an empty cache: %d misses of %d", o.Op, o.Misses, o.Count)
		}
	}

	res, err = Run(context.Background(), Config{
		Socket: path, Mix: map[string]int{"lookup": 1}, CacheType: "lmtp", Duration: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Errors != res.Requests || res.FirstError == nil {
		t.Errorf("lookups in a disabled cache: %d errors of %d, first %v", res.Errors, res.Requests, res.FirstError)
	}
	if !strings.Contains(res.String(), "first error") {
		t.Errorf("String() does not show the first error:\n%s", res)
	}
}

func TestRunFailures(t *testing.T) {
	_, path := startServer(t)
	if _, err := Run(context.Background(), Config{Socket: path, Mix: map[string]int{"lookup": 0}}); err == nil {
		t.Error("Run with an empty mix succeeded")
	}
	if _, err := Run(context.Background(), Config{Socket: path, Mix: map[string]int{"bogus": 3}}); err == nil {
		t.Error("Run with only unknown ops succeeded")
	}
	missing := filepath.Join(t.TempDir(), "nothing-here")
	for _, netpoll := range []bool{false, true} {
		_, err := Run(context.Background(), Config{Socket: missing, Mix: map[string]int{"seed": 1}, Duration: time.Second, NetPoll: netpoll})
		if err == nil || !strings.Contains(err.Error(), "nothing-here") {
			t.Errorf("NetPoll=%v: Run against a missing socket = %v", netpoll, err)
		}
	}
	_, err := Run(context.Background(), Config{Socket: path, Mix: map[string]int{"lookup": 1}, Prefill: 10, CacheType: "lmtp"})
	if err == nil || !strings.Contains(err.Error(), "prefill") {
		t.Errorf("prefill into a disabled cache = %v, want a prefill error", err)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	_, path := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	res, err := Run(ctx, Config{Socket: path, Mix: map[string]int{"seed": 1}, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned %v after cancel", d)
	}
	if res.Requests == 0 {
		t.Error("no requests before the cancel")
	}
}

func TestPercentiles(t *testing.T) {
	if p := percentiles(nil); p != [3]time.Duration{} {
		t.Errorf("percentiles(nil) = %v", p)
	}
	d := make([]time.Duration, 1000)
	for i := range d {
		d[i] = time.Duration(1000-i) * time.Microsecond // reversed: must be sorted
	}
	p := percentiles(d)
	if p[0] != 501*time.Microsecond || p[1] != 991*time.Microsecond || p[2] != 1000*time.Microsecond {
		t.Errorf("percentiles = %v", p)
	}
	if p := percentiles([]time.Duration{7}); p != [3]time.Duration{7, 7, 7} {
		t.Errorf("percentiles of one sample = %v", p)
	}
}

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPRNGFIPS draws random bytes from the running daemon through real
// seed requests, the way Postfix's smtpd and smtp get their seeds, and
// runs them through rngtest's FIPS 140-2 tests.
func TestPRNGFIPS(t *testing.T) {
	need(t, false, "rngtest")
	s := newStandalone(t)
	p := s.start(t)

	// rngtest tests blocks of 2500 bytes, after a 4-byte seed. A good
	// generator fails about 0.08% of blocks; the 0.2% bound is tight
	// enough to catch a bad one, and over 8000 blocks loose enough that
	// a good one fails the test only about once in several thousand runs.
	const (
		blockBytes = 2500
		blocks     = 8000
		want       = 4 + blocks*blockBytes // 20 MB
		seedSize   = 255
		conns      = 4
	)
	requests := (want + seedSize - 1) / seedSize
	bufs := make([]bytes.Buffer, conns)
	errs := make([]error, conns)
	begin := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c := s.client()
			defer c.Close()
			ctx := context.Background()
			for n := i; n < requests; n += conns {
				b, err := c.Seed(ctx, seedSize)
				if err == nil && len(b) != seedSize {
					err = fmt.Errorf("seed of %d bytes, want %d", len(b), seedSize)
				}
				if err != nil {
					errs[i] = err
					return
				}
				bufs[i].Write(b)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	var data bytes.Buffer
	for i := range conns {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		data.Write(bufs[i].Bytes())
	}
	t.Logf("%d seed requests of %d bytes in %v", requests, seedSize, elapsed.Round(time.Millisecond))

	cmd := exec.Command("rngtest")
	cmd.Stdin = bytes.NewReader(data.Bytes())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// rngtest exits non-zero when any block fails; the counts decide.
	cmd.Run()
	count := func(what string) int {
		m := regexp.MustCompile(`FIPS 140-2 ` + what + `: (\d+)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("rngtest printed no %s count:\n%s", what, stderr.String())
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	successes, failures := count("successes"), count("failures")
	tested := successes + failures
	if wantBlocks := (data.Len() - 4) / blockBytes; tested != wantBlocks {
		t.Fatalf("rngtest tested %d blocks, want %d:\n%s", tested, wantBlocks, stderr.String())
	}
	t.Logf("rngtest: %d of %d blocks failed (%.3f%%)", failures, tested, 100*float64(failures)/float64(tested))
	if failures*1000 > tested*2 {
		t.Errorf("rngtest: %d of %d blocks failed, more than 0.2%%:\n%s", failures, tested, stderr.String())
	}

	// The daemon counts what it served, and its pool was seeded from the
	// source and the exchange file.
	out, err := exec.Command(tlsmgrctlBin, "-s", s.Sock, "stats").Output()
	if err != nil {
		t.Fatalf("tlsmgrctl stats: %v", err)
	}
	st := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		// The table: the name, spaces, the value.
		if name, value, ok := strings.Cut(line, " "); ok {
			st[name] = strings.TrimSpace(value)
		}
	}
	if served := statInt(t, st, "prng_bytes_served"); served < int64(requests*seedSize) || served < 2500000 {
		t.Errorf("prng_bytes_served = %d, want at least %d", served, requests*seedSize)
	}
	for _, name := range []string{"prng_last_reseed", "prng_last_exchange_update"} {
		if v := st[name]; v == "" || v == "never" {
			t.Errorf("%s = %q, want a time", name, v)
		} else if _, err := time.Parse(time.RFC3339, v); err != nil {
			t.Errorf("%s = %q: %v", name, v, err)
		}
	}
	if st["prng_source_ok"] != "yes" {
		t.Errorf("prng_source_ok = %q", st["prng_source_ok"])
	}
	p.Stop(t)
	p.NoWarnings(t)
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkScaleMillion measures the daemon with a file cache of one
// million 512-byte sessions: start-up time, memory beyond the page cache
// (RssAnon), and request latency while the expiry sweep deletes all of
// them, against the same load with nothing to sweep. It takes a few
// minutes and a 1.1 GB file, so it runs only when asked for:
//
//	TLSMGR_SCALE=1 go test -run '^$' -bench ScaleMillion -benchtime 1x ./integration
func BenchmarkScaleMillion(b *testing.B) {
	if os.Getenv("TLSMGR_SCALE") != "1" {
		b.Skip("set TLSMGR_SCALE=1 to run the 1,000,000-entry measurement")
	}
	const entries = 1_000_000
	s := newStandalone(b, "smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache",
		"smtpd_tls_session_cache_max_entries=2000000", "smtpd_tls_session_cache_max_bytes=4g")
	ctl := func(args ...string) string {
		b.Helper()
		out, err := exec.Command(tlsmgrctlBin, append([]string{"-s", s.Sock}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("tlsmgrctl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// The load: one client, Postfix-like mix, lookups hitting fresh entries.
	load := func() (rps, p99 float64) {
		f := strings.Fields(ctl("bench", "-mix", "lookup=60,update=20,seed=20", "-c", "1",
			"-d", "10s", "-warmup", "1s", "-prefill", "2000", "-payload", "512", "-tsv"))
		rps, _ = strconv.ParseFloat(f[0], 64)
		p99, _ = strconv.ParseFloat(f[2], 64)
		return rps, p99
	}

	p := s.start(b, "smtpd_tls_session_cache_timeout=1h")
	began := time.Now()
	ctl("bench", "-mix", "policy", "-c", "1", "-d", "1s", "-warmup", "0s", "-prefill", strconv.Itoa(entries), "-payload", "512")
	filled := time.Now()
	b.Logf("filled %d entries in %v", entries, filled.Sub(began).Round(time.Second))
	p.Stop(b)

	// Start-up ends with the first answer: the socket is bound before the
	// cache file is opened, so accepting a connection proves nothing.
	began = time.Now()
	p = s.start(b, "smtpd_tls_session_cache_timeout=1h")
	ctl("policy", "smtpd")
	startup := time.Since(began)
	quietRPS, quietP99 := load()
	rss := rssAnonOf(b, p.Cmd.Process.Pid)
	st := ctlStats(b, ctl)
	b.Logf("start-up with %s entries: %v; RssAnon %d MB; quiet load: %.0f req/s, p99 %.0f µs",
		st["smtpd_cache_entries"], startup.Round(time.Millisecond), rss>>20, quietRPS, quietP99)
	p.Stop(b)

	// Everything filled is older than 120s from here on: a start with that
	// timeout sweeps it all, starting at once.
	time.Sleep(time.Until(filled.Add(125 * time.Second)))
	p = s.start(b, "smtpd_tls_session_cache_timeout=120s")
	sweepRPS, sweepP99 := load()
	st = ctlStats(b, ctl)
	b.Logf("while sweeping (%s swept so far, %s left): %.0f req/s, p99 %.0f µs: p99 x%.2f of quiet",
		st["smtpd_cache_swept"], st["smtpd_cache_entries"], sweepRPS, sweepP99, sweepP99/quietP99)
	p.Stop(b)
	p.NoWarnings(b)

	b.ReportMetric(startup.Seconds(), "startup-s")
	b.ReportMetric(float64(rss>>20), "rssanon-MB")
	b.ReportMetric(quietP99, "quiet-p99-µs")
	b.ReportMetric(sweepP99, "sweep-p99-µs")
	if swept, _ := strconv.Atoi(st["smtpd_cache_swept"]); swept == 0 {
		b.Error("the sweep did not run during the measurement")
	}
	if startup > 2*time.Second {
		b.Errorf("start-up took %v, want <= 2s", startup)
	}
	if rss > 100<<20 {
		b.Errorf("RssAnon %d MB, want <= 100 MB", rss>>20)
	}
	if sweepP99 > 2*quietP99 {
		b.Errorf("p99 during the sweep is x%.2f of quiet, want <= 2", sweepP99/quietP99)
	}
}

func ctlStats(b testing.TB, ctl func(...string) string) map[string]string {
	st := map[string]string{}
	for _, line := range strings.Split(ctl("stats"), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

func rssAnonOf(b testing.TB, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no RssAnon in /proc status")
	return 0
}

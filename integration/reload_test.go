package integration

// Live reload: SIGHUP makes a standalone daemon re-read main.cf and apply
// in place what may change, keeping its entries.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// TestReloadOnSIGHUP: a daemon with ten entries in a memory cache (smtpd)
// and ten in a file cache (smtp) gets a main.cf with a lower smtpd
// timeout, lower bounds, a new client limit and a new metrics address,
// and a real SIGHUP. The new values are in force (policy, stats, the
// client table, /metrics), the newest entries are all there and the
// evicted ones are the oldest, counted. Then a new smtp database, a
// privileged metrics port and a new entropy source are each logged as
// needing a restart and left as they were, the old file cache serving on;
// and a main.cf with an error changes nothing.
func TestReloadOnSIGHUP(t *testing.T) {
	s := newStandalone(t)
	// The daemon reads main.cf again as the mail owner, who can read
	// /etc/postfix, and so this directory.
	if err := os.Chmod(s.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	smtpFile := filepath.Join(s.Data, "smtp_scache")
	metricsA := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metricsB := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mainCF := func(lines ...string) string {
		return strings.Join(append([]string{
			"smtpd_tls_session_cache_database = memory:smtpd",
			"smtp_tls_session_cache_database = btree:" + smtpFile,
		}, lines...), "\n") + "\n"
	}
	s.WriteMainCF(t, mainCF("tlsmgr_metrics_address = "+metricsA))
	p := s.start(t)
	pid := p.Cmd.Process.Pid
	ctx := context.Background()
	c := s.client()
	defer c.Close()
	for i := range 10 {
		for _, typ := range []string{"smtpd", "smtp"} {
			if err := c.Update(ctx, typ, fmt.Sprint(typ, "-", i), []byte(fmt.Sprint("session ", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	reloads := 0
	reload := func(text string) {
		t.Helper()
		s.WriteMainCF(t, text)
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		waitLogCount(t, p, "reload", reloads)
	}
	live := func(typ string, i int) bool {
		t.Helper()
		got, err := c.Lookup(ctx, typ, fmt.Sprint(typ, "-", i))
		switch {
		case err == nil && string(got) == fmt.Sprint("session ", i):
			return true
		case err == nil:
			t.Errorf("%s-%d holds %q", typ, i, got)
		case !isNotFound(err):
			t.Fatalf("lookup %s-%d: %v", typ, i, err)
		}
		return false
	}

	// The values that may change.
	reload(mainCF(
		"smtpd_tls_session_cache_timeout = 600s",
		"smtpd_tls_session_cache_max_entries = 4",
		"smtp_tls_session_cache_max_entries = 6",
		"tlsmgr_client_limit = 3",
		"tlsmgr_metrics_address = "+metricsB,
	))
	log := p.Stderr.String()
	for _, want := range []string{
		"smtpd_tls_session_cache_timeout 3600s -> 600s",
		"smtpd_tls_session_cache_max_entries 100000 -> 4 (6 entries evicted)",
		"smtp_tls_session_cache_max_entries 100000 -> 6 (4 entries evicted)",
		"tlsmgr_client_limit 1000 -> 3",
		"tlsmgr_metrics_address " + metricsA + " -> " + metricsB,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the reload's summary lacks %q:\n%s", want, log)
		}
	}
	if pol, err := c.Policy(ctx, "smtpd"); err != nil || pol.Timeout != 600*time.Second || !pol.Cachable {
		t.Errorf("smtpd policy after reload: %+v, %v; want cachable, 600s", pol, err)
	}
	if pol, err := c.Policy(ctx, "smtp"); err != nil || pol.Timeout != 3600*time.Second {
		t.Errorf("smtp policy after reload: %+v, %v; want 3600s", pol, err)
	}
	for i := range 10 {
		if got := live("smtpd", i); got != (i >= 6) {
			t.Errorf("smtpd-%d live: %v, want %v", i, got, i >= 6)
		}
		if got := live("smtp", i); got != (i >= 4) {
			t.Errorf("smtp-%d live: %v, want %v", i, got, i >= 4)
		}
	}
	st := s.stats(t)
	for name, want := range map[string]int64{
		"smtpd_cache_timeout": 600, "smtpd_cache_entries": 4, "smtpd_cache_evictions": 6,
		"smtp_cache_timeout": 3600, "smtp_cache_entries": 6, "smtp_cache_evictions": 4,
		"connections_evicted": 0,
	} {
		if got := statInt(t, st, name); got != want {
			t.Errorf("stats %s = %d, want %d", name, got, want)
		}
	}
	// Entries written now keep to the new bound.
	if err := c.Update(ctx, "smtpd", "smtpd-10", []byte("session 10")); err != nil {
		t.Fatal(err)
	}
	if live("smtpd", 6) || !live("smtpd", 10) {
		t.Error("the new bound does not hold for new entries")
	}
	// The client limit: with c and two idle clients the table is full,
	// and one more makes room by closing the longest idle, c.
	for range 2 {
		idle := dialIdle(t, s.Sock)
		defer idle.Close()
	}
	// (At least one: a connection closed just before may still count.)
	st = s.stats(t)
	if ev, cl := statInt(t, st, "connections_evicted"), statInt(t, st, "clients"); ev < 1 || cl > 3 {
		t.Errorf("connections_evicted = %d, clients = %d with a client limit of 3 and 4 clients; want 1 or more and at most 3", ev, cl)
	}
	// /metrics moved.
	if _, err := http.Get("http://" + metricsA + "/metrics"); err == nil {
		t.Errorf("%s still serves /metrics", metricsA)
	}
	if !strings.Contains(scrape(t, metricsB), `tlsmgr_cache_entries{cache="smtpd"} 4`) {
		t.Errorf("%s does not serve the daemon's metrics", metricsB)
	}

	// What needs a restart: logged, one warning each, and kept.
	otherFile := filepath.Join(s.Data, "other_scache")
	privileged := privilegedPort(t)
	changed := mainCF(
		"smtpd_tls_session_cache_timeout = 600s",
		"smtpd_tls_session_cache_max_entries = 4",
		"smtp_tls_session_cache_max_entries = 6",
		"tlsmgr_client_limit = 3",
		"tlsmgr_metrics_address = "+privileged,
		"tls_random_source = dev:/dev/random",
	)
	changed = strings.Replace(changed, "btree:"+smtpFile, "btree:"+otherFile, 1)
	before := p.Stderr.String()
	reload(changed)
	log = strings.TrimPrefix(p.Stderr.String(), before)
	for _, want := range []string{
		fmt.Sprintf(`warning: smtp_tls_session_cache_database changed from "btree:%s" to "btree:%s": that needs a restart; keeping "btree:%s"`,
			smtpFile, otherFile, smtpFile),
		`warning: tls_random_source changed from "dev:/dev/urandom" to "dev:/dev/random": that needs a restart`,
		fmt.Sprintf(`warning: tlsmgr_metrics_address changed from %q to %q:`, metricsB, privileged),
		"nothing changed that applies while running",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the reload's log lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(log, "needs a restart (the daemon no longer has the privileges to bind it)") {
		t.Errorf("binding a privileged port after the privilege drop is not said to need a restart:\n%s", log)
	}
	for _, want := range []string{"_cache_database changed", "tls_random_source changed", "tlsmgr_metrics_address changed"} {
		if n := strings.Count(log, want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, log)
		}
	}
	if _, err := os.Stat(otherFile); !os.IsNotExist(err) {
		t.Errorf("the new cache file was made: %v", err)
	}
	for i := 4; i < 10; i++ {
		if !live("smtp", i) {
			t.Errorf("smtp-%d gone: the old file cache must serve on", i)
		}
	}
	if err := c.Update(ctx, "smtp", "smtp-10", []byte("session 10")); err != nil || !live("smtp", 10) {
		t.Errorf("the old file cache takes no update: %v", err)
	}
	if !strings.Contains(scrape(t, metricsB), "tlsmgr_cache_entries") {
		t.Errorf("%s no longer serves /metrics", metricsB)
	}

	// A main.cf with an error changes nothing.
	before = p.Stderr.String()
	stBefore := s.stats(t)
	reload(mainCF(
		"smtpd_tls_session_cache_timeout = 10x",
		"smtpd_tls_session_cache_max_entries = 1",
		"tlsmgr_client_limit = 1000",
	))
	log = strings.TrimPrefix(p.Stderr.String(), before)
	if !strings.Contains(log, "failed: invalid time value \"10x\" for parameter smtpd_tls_session_cache_timeout; nothing changed") ||
		strings.Contains(log, "reloaded") {
		t.Errorf("a broken main.cf:\n%s", log)
	}
	if pol, err := c.Policy(ctx, "smtpd"); err != nil || pol.Timeout != 600*time.Second {
		t.Errorf("smtpd policy after a failed reload: %+v, %v", pol, err)
	}
	stAfter := s.stats(t)
	for _, name := range []string{"smtpd_cache_entries", "smtpd_cache_evictions", "smtp_cache_entries", "smtp_cache_evictions", "smtpd_cache_timeout"} {
		if stAfter[name] != stBefore[name] {
			t.Errorf("%s changed from %s to %s in a failed reload", name, stBefore[name], stAfter[name])
		}
	}
	for i := 7; i <= 10; i++ {
		if !live("smtpd", i) {
			t.Errorf("smtpd-%d gone after a failed reload", i)
		}
	}
	p.Stop(t)
	if strings.Contains(p.Stderr.String(), "session 1") {
		t.Error("a session's bytes were logged")
	}
}

// waitLogCount waits until substr appears n times in the daemon's log.
func waitLogCount(t *testing.T, p *daemontest.Proc, substr string, n int) {
	t.Helper()
	if p.Stderr.WaitCount(substr, n, 10*time.Second) < n {
		t.Fatalf("%q not logged %d times:\n%s", substr, n, p.Stderr)
	}
}

// dialIdle connects and reads the announcement: a client that then waits.
func dialIdle(t *testing.T, sock string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, err := nc.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "tlsmgr_protocol") {
		t.Fatalf("announcement: %q, %v", buf[:n], err)
	}
	nc.SetReadDeadline(time.Time{})
	return nc
}

// privilegedPort is a free port on 127.0.0.1 that only root may bind.
func privilegedPort(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		testenv.Missing(t, "/proc/sys/net/ipv4/ip_unprivileged_port_start")
	}
	start, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for port := min(start, 1024) - 1; port > 900; port-- {
		if os.Geteuid() != 0 {
			return fmt.Sprintf("127.0.0.1:%d", port) // refused to us as to the daemon
		}
		if l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return l.Addr().String()
		}
	}
	testenv.Missing(t, "a port below net.ipv4.ip_unprivileged_port_start free on 127.0.0.1")
	return ""
}

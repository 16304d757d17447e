package daemon_test

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// reloadAndWait sends SIGHUP and waits until the daemon has logged its
// n-th reload, or its n-th failed one.
func reloadAndWait(t *testing.T, p *daemontest.Proc, n int) {
	t.Helper()
	p.Signal(t, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Stderr.String(), "reloaded ")+strings.Count(p.Stderr.String(), "reload of ") < n {
		if time.Now().After(deadline) {
			t.Fatalf("reload %d not logged:\n%s", n, p.Stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadChangesAppliedOnce: what a reload applies becomes what runs,
// so that the next reload of the same main.cf finds nothing to apply
// and logs none of it again (the client limit, a cache's timeout and
// bounds); what needs a restart is warned about at every reload that
// still finds it changed (ipc_timeout, a cache's database); and the
// warning that session tickets keep the key lifetime is about the smtpd
// cache, whose timeout gives it.
func TestReloadChangesAppliedOnce(t *testing.T) {
	e := newEnv(t, memoryCaches+"tlsmgr_client_limit = 100\nsmtpd_tls_session_cache_timeout = 3600s\n")
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	e.WriteMainCF(t, strings.Replace(memoryCaches, "memory:smtp\n", "memory:other\n", 1)+
		"tlsmgr_client_limit = 50\n"+
		"smtpd_tls_session_cache_timeout = 1800s\n"+
		"smtpd_tls_session_cache_max_entries = 500\n"+
		"ipc_timeout = 1800s\n")
	applied := []string{
		"tlsmgr_client_limit 100 -> 50",
		"smtpd_tls_session_cache_timeout 3600s -> 1800s",
		"smtpd_tls_session_cache_max_entries 100000 -> 500",
		`smtpd_tls_session_cache_timeout changed from "3600s" to "1800s": applied to the smtpd cache; session tickets keep the key lifetime of "3600s"`,
	}
	restart := []string{
		`ipc_timeout changed from "3600s" to "1800s": that needs a restart`,
		`smtp_tls_session_cache_database changed from "memory:smtp" to "memory:other": that needs a restart`,
	}
	for i := 1; i <= 2; i++ {
		reloadAndWait(t, p, i)
		log := p.Stderr.String()
		for _, want := range applied {
			if n := strings.Count(log, want); n != 1 {
				t.Errorf("after reload %d, %q logged %d times, want once", i, want, n)
			}
		}
		for _, want := range restart {
			if n := strings.Count(log, want); n != i {
				t.Errorf("after reload %d, %q logged %d times, want %d", i, want, n, i)
			}
		}
		if got := strings.TrimSpace(ctl(t, e.Sock, "policy", "smtpd")); got != "cachable=1 timeout=1800" {
			t.Errorf("after reload %d, policy smtpd: %s", i, got)
		}
	}
	if strings.Contains(p.Stderr.String(), "applied to the smtp cache") {
		t.Errorf("ticket key warning about the smtp cache:\n%s", p.Stderr)
	}
	if t.Failed() {
		t.Logf("log:\n%s", p.Stderr)
	}
}

// TestReloadAppliesEveryLiveParameter changes, in one reload, every
// parameter config's table says a reload applies in place: each is
// reported applied and none as needing a restart; the caches' new
// timeouts are the ones the server uses (what policy reports, a
// disabled cache's included, and the caches' own); and a second reload
// of the same main.cf finds nothing left to apply.
func TestReloadAppliesEveryLiveParameter(t *testing.T) {
	const caches = "smtpd_tls_session_cache_database = memory:smtpd\nsmtp_tls_session_cache_database = memory:smtp\n"
	e := newEnv(t, caches)
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	newValues := map[string]string{
		"tlsmgr_client_limit":    "50",
		"tlsmgr_metrics_address": "127.0.0.1:0",
		// memory: caches are opened as memory: whatever these say.
		"default_database_type":   "cdb",
		"default_cache_db_type":   "btree",
		"non_bdb_migration_level": "enable-redirect",
		"non_bdb_custom_mapping":  "inline:{btree=lmdb}",
	}
	for name, timeout := range map[string]string{"smtpd": "1800s", "smtp": "2h", "lmtp": "600"} {
		newValues[name+"_tls_session_cache_timeout"] = timeout
		newValues[name+"_tls_session_cache_max_entries"] = "500"
		newValues[name+"_tls_session_cache_max_bytes"] = "64m"
		newValues[name+"_tls_loglevel"] = "1"
	}
	var live []string
	mainCF := caches
	for _, pm := range config.Parameters() {
		if pm.Reload != config.ReloadLive {
			continue
		}
		v, ok := newValues[pm.Name]
		if !ok {
			t.Fatalf("a reload applies %s in place: give this test a new value for it", pm.Name)
		}
		live = append(live, pm.Name)
		mainCF += pm.Name + " = " + v + "\n"
	}
	e.WriteMainCF(t, mainCF)
	reloadAndWait(t, p, 1)
	log := p.Stderr.String()
	_, summary, _ := strings.Cut(log, "reloaded ")
	summary, _, _ = strings.Cut(summary, "\n")
	for _, name := range live {
		if !strings.Contains(summary, " "+name+" ") {
			t.Errorf("%s not reported applied: %s", name, summary)
		}
	}
	if strings.Contains(log, "needs a restart") {
		t.Errorf("a live parameter taken as needing a restart:\n%s", log)
	}
	for cache, want := range map[string]string{"smtpd": "cachable=1 timeout=1800", "smtp": "cachable=1 timeout=7200",
		"lmtp": "cachable=0 timeout=600"} {
		if got := strings.TrimSpace(ctl(t, e.Sock, "policy", cache)); got != want {
			t.Errorf("after the reload, policy %s: %s, want %s", cache, got, want)
		}
	}
	stats := ctl(t, e.Sock, "stats")
	for _, want := range []string{`(?m)^smtpd_cache_timeout +1800$`, `(?m)^smtp_cache_timeout +7200$`} {
		if !regexp.MustCompile(want).MatchString(stats) {
			t.Errorf("stats lack %s:\n%s", want, stats)
		}
	}
	reloadAndWait(t, p, 2)
	if !strings.Contains(p.Stderr.String(), "nothing changed that applies while running") {
		t.Errorf("the second reload applied something again:\n%s", p.Stderr)
	}
	if t.Failed() {
		t.Logf("log:\n%s", p.Stderr)
	}
}

// TestReloadChecksNewClientLimit: a reload whose tlsmgr_client_limit needs
// more open files than the process may have fails and changes nothing,
// as at start-up; the limit checked is the new one, not the one running.
func TestReloadChecksNewClientLimit(t *testing.T) {
	e := newEnv(t, memoryCaches+"tlsmgr_client_limit = 90\n")
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	// 90 clients and the reserve fit in 160 descriptors; 200 do not.
	args := append([]string{"-listen", e.Sock}, e.Opts()...)
	p := daemontest.StartCmd(t, e.Command("/bin/sh", append([]string{"-c", `ulimit -n 160 && exec "$0" "$@"`, tlsmgrBin}, args...)...))
	p.WaitServing(t, e.Sock)
	e.WriteMainCF(t, memoryCaches+"tlsmgr_client_limit = 200\n")
	reloadAndWait(t, p, 1)
	log := p.Stderr.String()
	if !strings.Contains(log, "failed: tlsmgr_client_limit = 200 needs 264 open files") || !strings.Contains(log, "nothing changed") {
		t.Errorf("reload to a limit past the open files did not fail:\n%s", log)
	}
	if strings.Contains(log, "tlsmgr_client_limit 90 -> 200") {
		t.Errorf("reload applied a limit past the open files:\n%s", log)
	}
	if !daemontest.Announces(e.Sock) {
		t.Fatalf("not serving after the reload:\n%s", log)
	}
}

// TestReloadMetricsAddressInUse: a tlsmgr_metrics_address that cannot be
// bound is not taken as applied: every reload that finds it tries again
// and says so.
func TestReloadMetricsAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t, memoryCaches)
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	e.WriteMainCF(t, memoryCaches+"tlsmgr_metrics_address = "+busy.Addr().String()+"\n")
	want := fmt.Sprintf(`tlsmgr_metrics_address changed from "" to %q`, busy.Addr().String())
	for i := 1; i <= 2; i++ {
		reloadAndWait(t, p, i)
		if n := strings.Count(p.Stderr.String(), want); n != i {
			t.Errorf("after reload %d, %q logged %d times, want %d:\n%s", i, want, n, i, p.Stderr)
		}
	}
	if strings.Contains(p.Stderr.String(), "serving metrics on") {
		t.Errorf("serves metrics:\n%s", p.Stderr)
	}
}

package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// TestSIGHUPUnderMaster: under master(8) SIGHUP keeps its default action,
// as for Postfix's own tlsmgr (whose server skeleton ignores only SIGPIPE
// and SIGXFSZ): the process ends, killed by the signal, and reloads
// nothing. Postfix never sends it; "postfix reload" restarts tlsmgr
// through the status channel (TestMasterMode).
func TestSIGHUPUnderMaster(t *testing.T) {
	e := newEnv(t, memoryCaches)
	p, _, path := startAsMaster(t, e, append([]string{"-l", "-t", "unix"}, e.Opts()...)...)
	p.WaitServing(t, path)
	p.Signal(t, syscall.SIGHUP)
	if st := p.Wait(t, 5*time.Second); st != 128+int(syscall.SIGHUP) {
		t.Fatalf("exit status %d after SIGHUP under master(8), want %d (killed by it):\n%s", st, 128+int(syscall.SIGHUP), p.Stderr)
	}
	if strings.Contains(p.Stderr.String(), "reload") {
		t.Errorf("reloaded under master(8):\n%s", p.Stderr)
	}
}

// TestSIGHUPStandaloneKeepsServing: standalone, SIGHUP reloads (here
// main.cf unchanged: nothing to apply) and the daemon serves on, the same
// process.
func TestSIGHUPStandaloneKeepsServing(t *testing.T) {
	e := newEnv(t, memoryCaches)
	// Readable by the mail owner, as /etc/postfix is: the daemon reads
	// it again after giving up root.
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	for range 2 {
		p.Signal(t, syscall.SIGHUP)
	}
	if !p.Stderr.WaitFor("nothing changed that applies while running", 10*time.Second) {
		t.Fatalf("no reload logged:\n%s", p.Stderr)
	}
	if !daemontest.Announces(e.Sock) {
		t.Fatalf("not serving after SIGHUP:\n%s", p.Stderr)
	}
	p.Stop(t)
	p.NoWarnings(t)
}

// TestReloadRestartOnlyChanges: a cache timeout of 0 (which turns the
// cache off) and a restart-only parameter are not applied by a reload:
// policy still reports the cache on, with its old timeout, and every
// reload that still finds the change says so again, rather than taking
// it as applied and falling silent.
func TestReloadRestartOnlyChanges(t *testing.T) {
	e := newEnv(t, memoryCaches+"smtpd_tls_session_cache_timeout = 3600s\n")
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	e.WriteMainCF(t, memoryCaches+"smtpd_tls_session_cache_timeout = 0\ntlsmgr_max_attribute_size = 32768\n")
	for i := 1; i <= 2; i++ {
		p.Signal(t, syscall.SIGHUP)
		if p.Stderr.WaitCount("reloaded ", i, 10*time.Second) < i {
			t.Fatalf("reload %d not logged:\n%s", i, p.Stderr)
		}
		for _, want := range []string{
			`smtpd_tls_session_cache_timeout changed from "3600s" to "0s": that needs a restart`,
			`tlsmgr_max_attribute_size changed from "65536" to "32768": that needs a restart`,
		} {
			if n := strings.Count(p.Stderr.String(), want); n != i {
				t.Errorf("after reload %d, %q logged %d times", i, want, n)
			}
		}
		if got := strings.TrimSpace(ctl(t, e.Sock, "policy", "smtpd")); got != "cachable=1 timeout=3600" {
			t.Errorf("after reload %d, policy smtpd: %s", i, got)
		}
	}
}

// TestReloadDatabaseType: a parameter that decides which type a cache's
// database is opened as is applied while the enabled caches stay as they
// are (a btree: name is not redirected without the migration), and needs
// a restart once one would be opened as another type (the migration
// redirects btree: to $default_cache_db_type): the warning names the
// cache, and the cache serves on from the file it has.
func TestReloadDatabaseType(t *testing.T) {
	e := newEnv(t, "")
	if err := os.Chmod(e.Cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := "smtpd_tls_session_cache_database = btree:" + filepath.Join(e.Data, "smtpd_scache") + "\n"
	e.WriteMainCF(t, cache)
	p := e.start(t)
	session := filepath.Join(t.TempDir(), "session")
	if err := os.WriteFile(session, []byte("a session"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl(t, e.Sock, "update", "smtpd", "id1", session)

	e.WriteMainCF(t, cache+"default_database_type = cdb\n")
	reloadAndWait(t, p, 1)
	if want := "default_database_type hash -> cdb (no enabled cache is opened otherwise)"; !strings.Contains(p.Stderr.String(), want) {
		t.Errorf("reload 1 does not say %q:\n%s", want, p.Stderr)
	}

	e.WriteMainCF(t, cache+"default_database_type = cdb\nnon_bdb_migration_level = enable-redirect\n")
	reloadAndWait(t, p, 2)
	want := `non_bdb_migration_level changed from "disable" to "enable-redirect": that needs a restart; keeping "disable"; ` +
		"the smtpd cache would be opened as lmdb:" + filepath.Join(e.Data, "smtpd_scache") + " instead of btree:"
	if !strings.Contains(p.Stderr.String(), want) {
		t.Errorf("reload 2 does not say %q:\n%s", want, p.Stderr)
	}
	if strings.Count(p.Stderr.String(), "default_database_type hash -> cdb") != 1 {
		t.Errorf("default_database_type applied again:\n%s", p.Stderr)
	}
	if got := ctl(t, e.Sock, "lookup", "smtpd", "id1"); got != "a session" {
		t.Errorf("after the reloads, lookup of the entry: %q", got)
	}
}

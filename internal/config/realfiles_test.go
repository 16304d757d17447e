package config

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// assignmentLine is a crude, independent view of a main.cf assignment:
// a line that starts a logical line and holds an '='.
var assignmentLine = regexp.MustCompile(`^([^\s#=]+)\s*=`)

// checkRealMainCF loads path as main.cf and checks that every parameter
// it defines is there, expands and leaves Params valid.
func checkRealMainCF(t *testing.T, path string) *Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if m := assignmentLine.FindStringSubmatch(sc.Text()); m != nil {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no assignments found", path)
	}
	dir := writeMainCF(t, string(data))
	c, err := Load(dir, nil, nil)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	c.mu.RLock()
	if len(c.values) != len(names) {
		t.Errorf("%s: parsed %d parameters, the file assigns %d", path, len(c.values), len(names))
	}
	c.mu.RUnlock()
	for name := range names {
		if _, ok, err := c.Lookup(name); !ok || err != nil {
			t.Errorf("%s: %s: defined=%v err=%v", path, name, ok, err)
		}
	}
	if _, err := c.Params(); err != nil {
		t.Errorf("%s: Params: %v", path, err)
	}
	return c
}

// installedFile returns a file from the installed Postfix package; it
// may be missing only outside CI.
func installedFile(t *testing.T, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		testenv.Missing(t, path)
	}
	return path
}

func TestDebianGeneratedMainCF(t *testing.T) {
	c := checkRealMainCF(t, filepath.Join("testdata", "debian", "main.cf"))
	p := mustParams(t, c)
	smtpd, smtp, lmtp := p.Caches[0], p.Caches[1], p.Caches[2]
	if smtpd.Database != "btree:/var/lib/postfix/smtpd_scache" || !smtpd.Enabled ||
		smtpd.DBType != "btree" || smtpd.DBPath != "/var/lib/postfix/smtpd_scache" {
		t.Errorf("smtpd cache %+v", smtpd)
	}
	if smtp.Database != "btree:/var/lib/postfix/smtp_scache" || !smtp.Enabled {
		t.Errorf("smtp cache %+v", smtp)
	}
	if lmtp.Enabled {
		t.Errorf("lmtp cache %+v", lmtp)
	}
	for name, want := range map[string]string{
		"smtpd_banner":             "mx1.example.org ESMTP Postfix (Debian/GNU)",
		"smtpd_relay_restrictions": "permit_mynetworks    permit_sasl_authenticated    defer_unauth_destination",
		"mydestination":            "mx1.example.org, example.org, mx1.example.org, localhost.example.org, localhost",
		"relayhost":                "",
		"compatibility_level":      "3.6",
	} {
		if v, _ := c.String(name); v != want {
			t.Errorf("%s = %q, want %q", name, v, want)
		}
	}
}

// Postfix 3.11 as Debian packages it, with a cache named after
// default_cache_db_type, then under the non-Berkeley-DB migration.
func TestDebian311MainCF(t *testing.T) {
	c := checkRealMainCF(t, filepath.Join("testdata", "debian-3.11", "main.cf"))
	p := mustParams(t, c)
	want := [3][3]string{
		{"lmdb:/var/lib/postfix/smtpd_scache", "lmdb", ""},
		{"btree:/var/lib/postfix/smtp_scache", "btree", ""},
	}
	if got := cacheTypes(p); got != want || !p.Caches[0].Enabled || !p.Caches[1].Enabled || p.Caches[2].Enabled {
		t.Errorf("caches %+v; want %q", p.Caches, want)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings %q", p.Warnings)
	}
	// What "postfix non-bdb enable-redirect" adds.
	c.Set("non_bdb_migration_level", "enable-redirect")
	p = mustParams(t, c)
	want[1] = [3]string{"btree:/var/lib/postfix/smtp_scache", "lmdb", "btree"}
	if got := cacheTypes(p); got != want || !p.LogRedirect || len(p.Warnings) != 0 {
		t.Errorf("redirected: caches %q, LogRedirect %v, warnings %q; want %q", got, p.LogRedirect, p.Warnings, want)
	}
}

func TestInstalledDebianMainCF(t *testing.T) {
	c := checkRealMainCF(t, installedFile(t, "/usr/share/postfix/main.cf.debian"))
	if v, _ := c.String("smtpd_banner"); !strings.Contains(v, "ESMTP Postfix") {
		t.Errorf("smtpd_banner = %q", v)
	}
}

func TestInstalledDistMainCF(t *testing.T) {
	c := checkRealMainCF(t, installedFile(t, "/usr/share/postfix/main.cf.dist"))
	// Its debugger_command is a value continued over indented lines.
	raw, ok := rawValue(c, "debugger_command")
	if !ok || !strings.HasPrefix(raw, "PATH=") || !strings.Contains(raw, "ddd $daemon_directory/$process_name") {
		t.Errorf("debugger_command as written = %q", raw)
	}
	if v, _ := c.String("debugger_command"); !strings.Contains(v, "ddd /usr/lib/postfix/sbin/tlsmgr ") {
		t.Errorf("debugger_command = %q", v)
	}
}

// TestDefaultsMatchPostconf compares our built-in defaults for Postfix's
// own parameters with what the installed Postfix reports.
func TestDefaultsMatchPostconf(t *testing.T) {
	postconf, err := exec.LookPath("postconf")
	if err != nil {
		for _, p := range []string{"/usr/sbin/postconf", "/usr/local/sbin/postconf"} {
			if _, err := os.Stat(p); err == nil {
				postconf = p
			}
		}
	}
	if postconf == "" {
		testenv.Missing(t, "postconf")
	}
	var names []string
	for _, pm := range table {
		if !pm.Own && !pm.NoDefault && pm.Kind != KindReadOnly {
			names = append(names, pm.Name)
		}
	}
	dir := writeMainCF(t, "")
	cmd := exec.Command(postconf, append([]string{"-c", dir, "-d", "mail_version"}, names...)...)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("postconf -d: %v", err)
	}
	got := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if name, value, ok := strings.Cut(strings.TrimRight(line, "\n"), " ="); ok {
			got[name] = strings.TrimPrefix(value, " ")
		}
	}
	installed, ok := postfixRelease(got["mail_version"])
	if !ok {
		t.Fatalf("postconf -d mail_version = %q", got["mail_version"])
	}
	for _, name := range names {
		v, ok := got[name]
		if since := byName[name].Since; since != 0 && installed < since {
			// A parameter this Postfix does not know yet.
			if ok {
				t.Errorf("%s: Postfix %s knows it, we say it came with %d.%d", name, got["mail_version"], since/1000, since%1000)
			}
			continue
		}
		if !ok || v != builtinDefaults[name] {
			t.Errorf("%s: postconf -d says %q (present=%v), we say %q", name, v, ok, builtinDefaults[name])
		}
	}
}

// postfixRelease reads the major and minor numbers of a mail_version
// ("3.7.11", "3.12-20260821") as major*1000 + minor.
func postfixRelease(version string) (int, bool) {
	num, _, _ := strings.Cut(version, "-")
	major, rest, ok := strings.Cut(num, ".")
	minor, _, _ := strings.Cut(rest, ".")
	x, errX := strconv.Atoi(major)
	y, errY := strconv.Atoi(minor)
	if !ok || errX != nil || errY != nil || x < 0 || y < 0 || y > 999 {
		return 0, false
	}
	return x*1000 + y, true
}

package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// daemonParams are the parameter names the daemon itself looks up or
// sets (c.String("myhostname"), cfg.Set("process_name", ...)), taken
// from its source, so that it cannot use one the table lacks.
func daemonParams(t *testing.T) []string {
	t.Helper()
	dir := "../daemon"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	use := regexp.MustCompile(`\.(?:String|Lookup|Time|Int|Size|Bool|Set)\("([a-z0-9_]+)"`)
	var names []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		src, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range use.FindAllStringSubmatch(string(src), -1) {
			if !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
	}
	if !slices.Contains(names, ParamProcessName) {
		t.Fatalf("the daemon's source no longer sets process_name as cfg.Set(\"process_name\", ...): fix this test (found %v)", names)
	}
	return names
}

// roff is how a default reads in the man page source.
func roff(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// TestManPageParameters fails when tlsmgr-go(8) lacks a parameter of
// the table that tlsmgr reads (or sets), or gives a wrong default: each
// is an entry
//
//	.IP "\fBname (default)\fR"
//
// with "empty" for an empty default and "read-only" for what the daemon
// sets itself; or documents a parameter the table lacks; or when its
// SIGHUP entry does not name every parameter a reload applies in place
// (ReloadLive), or names another before it turns to what needs a
// restart.
func TestManPageParameters(t *testing.T) {
	page, err := os.ReadFile("../../man/tlsmgr-go.8")
	if err != nil {
		t.Fatal(err)
	}
	text := string(page)
	for _, name := range daemonParams(t) {
		if pm := byName[name]; pm == nil || pm.Kind == KindReference {
			t.Errorf("the daemon uses %s, which the parameter table (table.go) lacks or has only as a reference", name)
		}
	}
	for _, pm := range table {
		if pm.Kind == KindReference {
			continue
		}
		prefix := `.IP "\fB` + roff(pm.Name) + ` (`
		i := strings.Index(text, "\n"+prefix)
		if i < 0 {
			t.Errorf("man/tlsmgr-go.8 does not document %s (want a line %s...)\\fR\")", pm.Name, prefix)
			continue
		}
		line, _, _ := strings.Cut(text[i+1:], "\n")
		got, ok := strings.CutSuffix(strings.TrimPrefix(line, prefix), `)\fR"`)
		if !ok {
			t.Errorf("man/tlsmgr-go.8: %q does not end in )\\fR\"", line)
			continue
		}
		var want string
		switch {
		case pm.Kind == KindReadOnly:
			want = roff("read-only")
		case pm.NoDefault:
			continue // myhostname: the system's, any text will do
		case pm.Default == "":
			want = "empty"
		default:
			want = roff(pm.Default)
		}
		if got != want {
			t.Errorf("man/tlsmgr-go.8 gives %s the default (%s), the table (%s)", pm.Name, got, want)
		}
	}
	entry := regexp.MustCompile(`(?m)^\.IP "\\fB([a-z0-9_]+) \(`)
	for _, m := range entry.FindAllStringSubmatch(text, -1) {
		if pm := byName[m[1]]; pm == nil || pm.Kind == KindReference {
			t.Errorf("man/tlsmgr-go.8 documents %s, which tlsmgr does not read: it is not in the parameter table", m[1])
		}
	}
	checkManPageReload(t, text)
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "PROTOCOL", "SECURITY", "DIAGNOSTICS",
		`"CONFIGURATION PARAMETERS"`, `"REDIS DATABASES"`, `"SEE ALSO"`} {
		if !strings.Contains(text, "\n.SH "+section+"\n") {
			t.Errorf("man/tlsmgr-go.8 has no section %s", section)
		}
	}
}

// cacheParam writes a cache type's parameter as the man page does when
// it means all three: smtpd_tls_loglevel as *_tls_loglevel.
func cacheParam(name string) string {
	for _, t := range CacheTypes {
		if rest, ok := strings.CutPrefix(name, t+"_"); ok && byName[name] != nil {
			return "*_" + rest
		}
	}
	return name
}

// checkManPageReload wants the SIGHUP entry of tlsmgr-go(8) to name every
// parameter a reload applies in place (ReloadLive), and, before it first
// says what "needs a restart", no other.
func checkManPageReload(t *testing.T, text string) {
	t.Helper()
	_, entry, ok := strings.Cut(text, "\n.B SIGHUP\n")
	if !ok {
		t.Error("man/tlsmgr-go.8 has no SIGHUP entry")
		return
	}
	entry, _, _ = strings.Cut(entry, "\n.IP\n")
	live, _, _ := strings.Cut(entry, "needs a restart")
	named := regexp.MustCompile(`(?m)^\.BR? (\*?[a-z0-9_]+)`)
	inEntry := map[string]bool{}
	for _, m := range named.FindAllStringSubmatch(entry, -1) {
		inEntry[m[1]] = true
	}
	for _, m := range named.FindAllStringSubmatch(live, -1) {
		name := strings.Replace(m[1], "*_", CacheTypes[0]+"_", 1)
		if pm := byName[name]; pm != nil && pm.Reload != ReloadLive {
			t.Errorf("man/tlsmgr-go.8, SIGHUP: %s is named among what a reload applies, but the table says %v", m[1], pm.Reload)
		}
	}
	for _, pm := range table {
		if pm.Reload == ReloadLive && !inEntry[cacheParam(pm.Name)] && !inEntry[pm.Name] {
			t.Errorf("man/tlsmgr-go.8, SIGHUP: a reload applies %s in place, but the entry does not name it (as .B %s)", pm.Name, cacheParam(pm.Name))
		}
	}
}

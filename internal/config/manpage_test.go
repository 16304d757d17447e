package config

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readParams finds, from the code itself, the parameters of the
// defaults table that Params reads: it poisons one at a time with a
// reference loop and sees whether Params fails on that very parameter.
// A parameter only referenced by others (multi_instance_name, in
// syslog_name's default) makes another one fail, so it does not count.
func readParams(t *testing.T) []string {
	t.Helper()
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Params(); err != nil {
		t.Fatalf("the built-in defaults do not make valid Params: %v", err)
	}
	var read []string
	for name := range builtinDefaults {
		c, _ := Load("", nil, nil)
		c.Set(name, "$"+name)
		_, err := c.Params()
		var ve *ValueError
		if errors.As(err, &ve) && ve.Param == name {
			read = append(read, name)
		}
	}
	slices.Sort(read)
	if len(read) < 30 {
		t.Fatalf("found only %d parameters read by Params: %v", len(read), read)
	}
	return read
}

// daemonParams are the parameter names the daemon itself looks up or
// sets (cfg.String("myhostname"), cfg.Set("process_name", ...)), taken
// from its source, so that a new one cannot go undocumented either.
func daemonParams(t *testing.T) []string {
	t.Helper()
	dir := "../daemon"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	use := regexp.MustCompile(`\bcfg\.(?:String|Lookup|Time|Int|Size|Bool|Set)\("([a-z0-9_]+)"`)
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
	if !slices.Contains(names, "myhostname") {
		t.Fatalf("the daemon's source no longer looks up myhostname as cfg.String(\"myhostname\"): fix this test (found %v)", names)
	}
	return names
}

// roff is how a default reads in the man page source.
func roff(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// TestManPageParameters fails when tlsmgr-go(8) lacks a parameter the code
// reads, or gives a wrong default: each is an entry
//
//	.IP "\fBname (default)\fR"
//
// with "empty" for an empty default and "read-only" for what the daemon
// sets itself.
func TestManPageParameters(t *testing.T) {
	page, err := os.ReadFile("../../man/tlsmgr-go.8")
	if err != nil {
		t.Fatal(err)
	}
	text := string(page)
	readOnly := map[string]bool{ParamProcessID: true, ParamProcessName: true, ParamServiceName: true}
	names := readParams(t)
	for _, n := range daemonParams(t) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, name := range names {
		prefix := `.IP "\fB` + roff(name) + ` (`
		i := strings.Index(text, "\n"+prefix)
		if i < 0 {
			t.Errorf("man/tlsmgr-go.8 does not document %s (want a line %s...)\\fR\")", name, prefix)
			continue
		}
		line, _, _ := strings.Cut(text[i+1:], "\n")
		got, ok := strings.CutSuffix(strings.TrimPrefix(line, prefix), `)\fR"`)
		if !ok {
			t.Errorf("man/tlsmgr-go.8: %q does not end in )\\fR\"", line)
			continue
		}
		def, inTable := builtinDefaults[name]
		var want string
		switch {
		case readOnly[name]:
			want = roff("read-only")
		case !inTable:
			continue // myhostname: the system's, any text will do
		case def == "":
			want = "empty"
		default:
			want = roff(def)
		}
		if got != want {
			t.Errorf("man/tlsmgr-go.8 gives %s the default (%s), the code (%s)", name, got, want)
		}
	}
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "PROTOCOL", "SECURITY", "DIAGNOSTICS",
		`"CONFIGURATION PARAMETERS"`, `"REDIS DATABASES"`, `"SEE ALSO"`} {
		if !strings.Contains(text, "\n.SH "+section+"\n") {
			t.Errorf("man/tlsmgr-go.8 has no section %s", section)
		}
	}
}

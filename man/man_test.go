// Package man holds the manual pages, tlsmgr-go(8) and tlsmgrctl(1). Their
// content is checked against the code where it is defined: the
// parameters in config (internal/config/manpage_test.go), tlsmgrctl's commands
// and flags in cmd/tlsmgrctl. This test checks that they are well-formed
// and render.
package man

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

var pages = []struct{ file, name string }{
	{"tlsmgr-go.8", "TLSMGR-GO"},
	{"tlsmgrctl.1", "TLSMGRCTL"},
}

func need(t *testing.T, cmd string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		testenv.Missing(t, cmd)
	}
}

// mandoc's linter finds no problem of level warning or worse.
func TestLint(t *testing.T) {
	need(t, "mandoc")
	for _, p := range pages {
		out, err := exec.Command("mandoc", "-T", "lint", "-W", "warning", p.file).CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Errorf("mandoc -T lint -W warning %s: %v\n%s", p.file, err, out)
		}
	}
}

// man(1) renders each page, without a word on standard error.
func TestRender(t *testing.T) {
	need(t, "man")
	for _, p := range pages {
		cmd := exec.Command("man", "-l", p.file)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80", "LC_ALL=C")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() != 0 {
			t.Errorf("man -l %s: %v\n%s", p.file, err, stderr.String())
			continue
		}
		out := stdout.String()
		if len(out) < 2000 || !strings.Contains(out, "NAME") || !strings.Contains(out, "SEE ALSO") ||
			!strings.HasPrefix(strings.TrimSpace(out), p.name+"(") {
			t.Errorf("man -l %s rendered %d bytes:\n%s", p.file, len(out), out)
		}
	}
}

// The two pages point at each other.
func TestCrossReferences(t *testing.T) {
	for file, want := range map[string]string{"tlsmgr-go.8": ".BR tlsmgrctl (1)", "tlsmgrctl.1": ".BR tlsmgr\\-go (8)"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, seeAlso, _ := strings.Cut(string(b), "\n.SH \"SEE ALSO\"\n")
		if !strings.Contains(seeAlso, want) {
			t.Errorf("%s: SEE ALSO lacks %s", file, want)
		}
	}
}

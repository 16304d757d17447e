package main

// These tests run the built tlsmgr as an operator would from a shell:
// its help, its refusal to start without master(8) or a socket, and the
// version it logs and reports to tlsmgrctl.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemon"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

var tlsmgrBin, tlsmgrctlBin, binDir string

func TestMain(m *testing.M) {
	daemontest.Main(m, "../..", func(b daemontest.Bins) { binDir, tlsmgrBin, tlsmgrctlBin = b.Dir, b.Tlsmgr, b.Tlsmgrctl })
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs bin with args, no MAIL_CONFIG, and only standard input,
// output and error open, as from a shell.
func run(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatal(err)
			}
			code = ee.ExitCode()
		}
		return result{code, stdout.String(), stderr.String()}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %q still running after 15s; stderr:\n%s", bin, args, stderr.String())
		return result{}
	}
}

// -h and --help print the usage on standard output and exit 0, wherever
// they are among the options; a -h that is the value of -o is not one.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"-v", "-h"}, {"-vh"},
		{"-o", "tls_random_bytes=64", "-h"}, {"-listen", "/nonexistent/sock", "-h"}, {"-l", "-t", "unix", "--help"}} {
		r := run(t, tlsmgrBin, args...)
		if r.code != 0 || r.stdout != daemon.Usage || r.stderr != "" {
			t.Errorf("tlsmgr %q: exit %d, stderr %q, stdout:\n%s", args, r.code, r.stderr, r.stdout)
		}
	}
	// The usage has both forms and the common parameters.
	for _, want := range []string{"-listen PATH", "-o name=value", "master(8)", "master.cf", "tlsmgr-go",
		"smtpd_tls_session_cache_database", "tlsmgr_ticket_key_database", "tlsmgr-go(8)"} {
		if !strings.Contains(daemon.Usage, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	r := run(t, tlsmgrBin, "-o", "-h")
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "-o") {
		t.Errorf("tlsmgr -o -h: exit %d, stdout %q, stderr %q; want the -o value refused", r.code, r.stdout, r.stderr)
	}
	if r := run(t, tlsmgrBin, "-x"); r.code == 0 || !strings.Contains(r.stderr, "invalid option") {
		t.Errorf("tlsmgr -x: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Run by hand without -listen or -S, outside master(8), tlsmgr says how to
// run it standalone (one fatal line) and fails; it creates nothing.
func TestNotUnderMaster(t *testing.T) {
	for _, args := range [][]string{{}, {"-v"}, {"-o", "tls_random_bytes=64"}} {
		r := run(t, tlsmgrBin, args...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("tlsmgr %q: exit %d, stdout %q, want 1 and nothing", args, r.code, r.stdout)
		}
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "fatal: ") {
			t.Errorf("tlsmgr %q: stderr is not one fatal line:\n%s", args, r.stderr)
			continue
		}
		for _, want := range []string{"not started by master(8)", "tlsmgr -listen ", "tlsmgr -h"} {
			if !strings.Contains(lines[0], want) {
				t.Errorf("tlsmgr %q: %q lacks %q", args, lines[0], want)
			}
		}
	}
}

func TestVersionFlag(t *testing.T) {
	r := run(t, tlsmgrBin, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "tlsmgr ") || strings.Count(r.stdout, "\n") != 1 || r.stderr != "" {
		t.Errorf("tlsmgr --version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if v := strings.TrimSpace(strings.TrimPrefix(r.stdout, "tlsmgr ")); v == "" || strings.Contains(v, " ") {
		t.Errorf("tlsmgr --version printed %q: want one word", r.stdout)
	}
}

// versionOf is what tlsmgr --version says.
func versionOf(t *testing.T, bin string) string {
	t.Helper()
	r := run(t, bin, "--version")
	return strings.TrimSpace(strings.TrimPrefix(r.stdout, "tlsmgr "))
}

// checkVersions starts the daemon bin and checks that it logs its version
// once at start-up, and that tlsmgrctl version prints ctl's and the
// daemon's: want, both.
func checkVersions(t *testing.T, bin, ctlBin, want string) {
	t.Helper()
	e := daemontest.NewEnv(t, daemontest.MemoryCaches)
	p := e.Start(t, bin)
	defer p.Kill()
	line := "tlsmgr version " + want + " starting"
	if n := p.Stderr.WaitCount(line, 1, 5*time.Second); n != 1 {
		t.Errorf("the daemon logged %q %d times, want once:\n%s", line, n, p.Stderr)
	}
	r := run(t, ctlBin, "-s", e.Sock, "-timeout", "5s", "version")
	if wantOut := fmt.Sprintf("tlsmgrctl %s\ntlsmgr %s\n", want, want); r.code != 0 || r.stdout != wantOut {
		t.Errorf("tlsmgrctl version: exit %d, stdout %q, want %q; stderr %q", r.code, r.stdout, wantOut, r.stderr)
	}
	r = run(t, ctlBin, "-s", e.Sock, "-timeout", "5s", "stats")
	if !regexp.MustCompile(`(?m)^version +` + regexp.QuoteMeta(want) + `$`).MatchString(r.stdout) {
		t.Errorf("stats lack version %s:\n%s", want, r.stdout)
	}
	p.Stop(t)
	p.NoWarnings(t)
}

// The daemon and tlsmgrctl of one build report the same version, the
// one tlsmgr --version prints.
func TestVersion(t *testing.T) {
	checkVersions(t, tlsmgrBin, tlsmgrctlBin, versionOf(t, tlsmgrBin))
}

// The version is set in one place, with the linker, for both programs.
func TestVersionLdflags(t *testing.T) {
	const v = "9.8.7-ldflags-test"
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // the daemon may run as nobody
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"-ldflags", "-X github.com/gotlsmgr/tlsmgr/internal/version.Version="+v,
		"./cmd/tlsmgr", "./cmd/tlsmgrctl")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bin, ctlBin := filepath.Join(dir, "tlsmgr"), filepath.Join(dir, "tlsmgrctl")
	if got := versionOf(t, bin); got != v {
		t.Errorf("tlsmgr --version says %q, want %q", got, v)
	}
	checkVersions(t, bin, ctlBin, v)
}

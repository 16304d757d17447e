package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/version"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// startServer serves tlsmgr (smtpd and smtp caches, lmtp disabled) and
// returns the socket path.
func startServer(t *testing.T) string { return servertest.Start(t, "").Path }

type result struct {
	code           int
	stdout, stderr string
}

func ctl(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errOut bytes.Buffer
	code := run(args, stdin, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func (r result) want(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %q\nstderr: %q", r.code, code, r.stdout, r.stderr)
	}
	return r
}

func TestSeed(t *testing.T) {
	sock := startServer(t)
	for _, n := range []int{1, 16, 255} {
		r := ctl(t, nil, "-s", sock, "seed", fmt.Sprint(n)).want(t, 0)
		out := strings.TrimSuffix(r.stdout, "\n")
		if len(out) != 2*n || strings.Contains(out, "\n") {
			t.Errorf("seed %d printed %q, want %d hex digits and a newline", n, r.stdout, 2*n)
		}
		if _, err := hex.DecodeString(out); err != nil {
			t.Errorf("seed %d printed non-hex %q", n, out)
		}
		if r.stderr != "" {
			t.Errorf("stderr: %q", r.stderr)
		}
	}
}

func TestPolicy(t *testing.T) {
	sock := startServer(t)
	if r := ctl(t, nil, "-s", sock, "policy", "smtpd").want(t, 0); r.stdout != "cachable=1 timeout=3600\n" {
		t.Errorf("policy smtpd printed %q", r.stdout)
	}
	if r := ctl(t, nil, "-s", sock, "policy", "lmtp").want(t, 0); r.stdout != "cachable=0 timeout=3600\n" {
		t.Errorf("policy lmtp printed %q", r.stdout)
	}
	r := ctl(t, nil, "-s", sock, "policy", "bogus").want(t, 2)
	if r.stdout != "" || !strings.Contains(r.stderr, "status -2") {
		t.Errorf("policy bogus: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestUpdateLookupDelete(t *testing.T) {
	sock := startServer(t)
	const id = "feedface&s=smtpd&l=805306672"
	session := []byte("\x00\x01\x02 binary session \xff\xfe\n")

	ctl(t, bytes.NewReader(session), "-s", sock, "update", "smtpd", id, "-").want(t, 0)
	r := ctl(t, nil, "-s", sock, "lookup", "smtpd", id).want(t, 0)
	if r.stdout != string(session) {
		t.Errorf("lookup printed %q, want %q", r.stdout, session)
	}

	// From a file.
	file := filepath.Join(t.TempDir(), "sess")
	if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl(t, nil, "-s", sock, "update", "smtp", "other", file).want(t, 0)
	if r := ctl(t, nil, "-s", sock, "lookup", "smtp", "other").want(t, 0); r.stdout != "from a file" {
		t.Errorf("lookup printed %q", r.stdout)
	}
	ctl(t, nil, "-s", sock, "update", "smtp", "x", filepath.Join(t.TempDir(), "missing")).want(t, 2)

	// Miss: exit 1, nothing on stdout.
	r = ctl(t, nil, "-s", sock, "lookup", "smtpd", "nope").want(t, 1)
	if r.stdout != "" || !strings.Contains(r.stderr, "not found") {
		t.Errorf("lookup miss: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	// Disabled cache: exit 2.
	ctl(t, nil, "-s", sock, "lookup", "lmtp", id).want(t, 2)
	ctl(t, strings.NewReader("x"), "-s", sock, "update", "lmtp", id, "-").want(t, 2)

	ctl(t, nil, "-s", sock, "delete", "smtpd", id).want(t, 0)
	ctl(t, nil, "-s", sock, "lookup", "smtpd", id).want(t, 1)
	ctl(t, nil, "-s", sock, "delete", "smtpd", id).want(t, 1)
}

var keyLine = regexp.MustCompile(`^name=([0-9a-f]{32}) expiry=(\d+) \((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)\n`)

func TestTktkey(t *testing.T) {
	sock := startServer(t)
	c := client.New(sock, client.Options{})
	defer c.Close()
	key, err := c.TicketKey(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{hex.EncodeToString(key.AES[:]), hex.EncodeToString(key.HMAC[:])}

	r := ctl(t, nil, "-s", sock, "tktkey").want(t, 0)
	m := keyLine.FindStringSubmatch(r.stdout)
	if m == nil || len(r.stdout) != len(m[0]) {
		t.Fatalf("tktkey printed %q", r.stdout)
	}
	if m[1] != hex.EncodeToString(key.Name[:]) || m[2] != fmt.Sprint(key.Expiry) ||
		m[3] != time.Unix(key.Expiry, 0).UTC().Format(time.RFC3339) {
		t.Errorf("tktkey printed %q, want the key %x expiring %d", r.stdout, key.Name, key.Expiry)
	}
	for _, s := range secrets {
		if strings.Contains(r.stdout+r.stderr, s) || strings.Contains(r.stdout, "aes=") {
			t.Errorf("tktkey without -show-secrets printed a secret: %q", r.stdout)
		}
	}

	r = ctl(t, nil, "-s", sock, "-show-secrets", "tktkey", hex.EncodeToString(key.Name[:])).want(t, 0)
	want := fmt.Sprintf("aes=%s hmac=%s\n", secrets[0], secrets[1])
	if !keyLine.MatchString(r.stdout) || !strings.HasSuffix(r.stdout, "\n"+want) {
		t.Errorf("tktkey -show-secrets NAME printed %q, want the key line then %q", r.stdout, want)
	}

	ctl(t, nil, "-s", sock, "tktkey", strings.Repeat("ab", 16)).want(t, 1)
	for _, bad := range []string{"xyz", "abcd", strings.Repeat("ab", 17)} {
		r := ctl(t, nil, "-s", sock, "tktkey", bad).want(t, 2)
		if !strings.Contains(r.stderr, "32 hex digits") {
			t.Errorf("tktkey %q: stderr %q", bad, r.stderr)
		}
	}
}

func TestStats(t *testing.T) {
	sock := startServer(t)
	ctl(t, nil, "-s", sock, "seed", "4").want(t, 0)
	r := ctl(t, nil, "-s", sock, "stats").want(t, 0)
	line := regexp.MustCompile(`^([a-z0-9_]+ +\S.*)?$`) // blank lines part groups
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) < 10 {
		t.Fatalf("stats printed %d lines:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("stats line %q is not \"name value\"", l)
		}
	}
	for _, want := range []string{"requests_seed +1", "smtpd_cache_enabled +1", "lmtp_cache_enabled +0", "requests_stats +1"} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(r.stdout) {
			t.Errorf("stats lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	sock := startServer(t)
	for _, args := range [][]string{
		{},
		{"-s", sock},
		{"-nosuchflag"},
		{"-s", sock, "frobnicate"},
		{"-s", sock, "seed"},
		{"-s", sock, "seed", "0"},
		{"-s", sock, "seed", "256"},
		{"-s", sock, "seed", "abc"},
		{"-s", sock, "seed", "1", "2"},
		{"-s", sock, "policy"},
		{"-s", sock, "lookup", "smtpd"},
		{"-s", sock, "update", "smtpd", "id"},
		{"-s", sock, "delete", "smtpd"},
		{"-s", sock, "tktkey", "a", "b"},
		{"-s", sock, "stats", "extra"},
		{"-timeout", "soon", "stats"},
	} {
		r := ctl(t, nil, args...)
		if r.code != 2 {
			t.Errorf("%q: exit %d, want 2", args, r.code)
		}
		if !strings.Contains(r.stderr, "usage") {
			t.Errorf("%q: stderr lacks the usage text: %q", args, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%q: printed %q on stdout", args, r.stdout)
		}
	}
}

func TestNoServer(t *testing.T) {
	r := ctl(t, nil, "-s", filepath.Join(t.TempDir(), "none"), "seed", "4").want(t, 2)
	if !strings.Contains(r.stderr, "tlsmgrctl: ") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	sock := startServer(t)
	t.Setenv("TLSMGR_SOCKET", sock)
	if r := ctl(t, nil, "policy", "smtp").want(t, 0); r.stdout != "cachable=1 timeout=3600\n" {
		t.Errorf("policy printed %q", r.stdout)
	}
	// -s wins over the environment.
	ctl(t, nil, "-s", filepath.Join(t.TempDir(), "none"), "policy", "smtp").want(t, 2)
}

// -timeout bounds a request to a daemon that never answers.
func TestTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mute")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, nc); nc.Close() }()
		}
	}()
	start := time.Now()
	r := ctl(t, nil, "-s", path, "-timeout", "200ms", "seed", "4").want(t, 2)
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("returned after %v, want about 200ms", d)
	}
	if !strings.Contains(r.stderr, "timeout") {
		t.Errorf("stderr %q does not mention the timeout", r.stderr)
	}
}

func TestBench(t *testing.T) {
	sock := startServer(t)
	r := ctl(t, nil, "-s", sock, "bench", "-d", "200ms", "-warmup", "0", "-prefill", "100", "-c", "2").want(t, 0)
	for _, want := range []string{"socket " + sock + ", 2 connection(s), mix lookup=60,update=20,seed=20", "req/s", "errors 0", "lookup", "p99"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "first error") {
		t.Errorf("bench reported errors:\n%s", r.stdout)
	}

	r = ctl(t, nil, "-s", sock, "bench", "-d", "100ms", "-warmup", "0", "-prefill", "10", "-mix", "seed", "-tsv").want(t, 0)
	if f := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\t"); len(f) != 5 || strings.Count(r.stdout, "\n") != 1 || f[4] != "0" {
		t.Errorf("bench -tsv printed %q, want one line of 5 fields ending in 0 errors", r.stdout)
	}

	for _, args := range [][]string{
		{"-s", sock, "bench", "-mix", "bogus=1"},
		{"-s", sock, "bench", "-mix", "lookup=0"},
		{"-s", sock, "bench", "-nosuchflag"},
		{"-s", filepath.Join(t.TempDir(), "none"), "bench", "-d", "10ms", "-warmup", "0", "-prefill", "0"},
	} {
		if r := ctl(t, nil, args...); r.code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, r.code, r.stderr)
		}
	}
}

// -h, --help and help print the usage, with every command and flag, on
// standard output and succeed; so does bench -h, on its flags.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		r := ctl(t, nil, args...).want(t, 0)
		for _, want := range []string{"usage: tlsmgrctl", "\n  version ", "\n  bench ", "-show-secrets", "-timeout duration", "tlsmgrctl(1)"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q: stdout lacks %q:\n%s", args, want, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("%q: stderr %q", args, r.stderr)
		}
	}
	if r := ctl(t, nil, "-s", "/nonexistent", "bench", "-h").want(t, 0); !strings.Contains(r.stdout+r.stderr, "-prefill") {
		t.Errorf("bench -h does not list the bench flags: %q %q", r.stdout, r.stderr)
	}
}

// fakeDaemon answers every stats request with pairs, as a daemon of
// another version would, and returns its socket.
func fakeDaemon(t *testing.T, pairs ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				io.WriteString(nc, proto.Announcement)
				r := attr.NewReader(nc, attr.Limits{MaxName: 100, MaxValue: 100, MaxList: 1000})
				w := attr.NewWriter(nc)
				for {
					if _, err := r.ReadList(); err != nil {
						return
					}
					w.Int(proto.AttrStatus, proto.StatusOK)
					for i := 0; i+1 < len(pairs); i += 2 {
						w.Str(pairs[i], pairs[i+1])
					}
					w.End()
					if w.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

// version prints the tool's version (the one of internal/version) and
// the one the daemon reports in its stats.
func TestVersion(t *testing.T) {
	tool := "tlsmgrctl " + version.String() + "\n"
	sock := fakeDaemon(t, "pid", "1", proto.VersionStat, "9.8.7-fake", "requests", "3")
	if r := ctl(t, nil, "-s", sock, "version").want(t, 0); r.stdout != tool+"tlsmgr 9.8.7-fake\n" || r.stderr != "" {
		t.Errorf("version printed %q, stderr %q; want %q", r.stdout, r.stderr, tool+"tlsmgr 9.8.7-fake\n")
	}

	// A daemon whose stats carry no version: the tool's still, exit 1.
	r := ctl(t, nil, "-s", fakeDaemon(t, "pid", "1"), "version").want(t, 1)
	if r.stdout != tool || !strings.Contains(r.stderr, "no "+proto.VersionStat) {
		t.Errorf("version against an old daemon: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	// No daemon at all: the tool's version, then the error.
	r = ctl(t, nil, "-s", filepath.Join(t.TempDir(), "none"), "version").want(t, 2)
	if r.stdout != tool || !strings.Contains(r.stderr, "version") {
		t.Errorf("version without a daemon: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	ctl(t, nil, "-s", sock, "version", "extra").want(t, 2)
}

// tlsmgrctl(1) describes every command of the usage and every flag, the
// global ones and bench's, each after a .TP as ".B name" or ".BI name ...".
func TestManPage(t *testing.T) {
	b, err := os.ReadFile("../../man/tlsmgrctl.1")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	documented := func(name string) bool {
		re := regexp.MustCompile(`(?m)^\.TP\n\.BR? ` + regexp.QuoteMeta(strings.ReplaceAll(name, "-", `\-`)) + `( |$)`)
		re2 := regexp.MustCompile(`(?m)^\.TP\n\.BI ` + regexp.QuoteMeta(strings.ReplaceAll(name, "-", `\-`)) + ` `)
		return re.MatchString(page) || re2.MatchString(page)
	}
	_, cmds, ok := strings.Cut(usage, "\ncommands:\n")
	if !ok {
		t.Fatal("usage has no commands: section")
	}
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	var n int
	for _, line := range strings.Split(cmds, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") {
			n++
			if !documented(f[0]) {
				t.Errorf("man/tlsmgrctl.1 does not describe the command %s", f[0])
			}
		}
	}
	if n < 10 {
		t.Errorf("found %d commands in the usage, want every one", n)
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)
	global := ctl(t, nil, "-h").want(t, 0)
	bench := ctl(t, nil, "bench", "-h").want(t, 0)
	var flags []string
	for _, out := range []string{global.stdout, bench.stdout + bench.stderr} {
		for _, m := range flagLine.FindAllStringSubmatch(out, -1) {
			flags = append(flags, m[1])
		}
	}
	if len(flags) < 15 {
		t.Errorf("found %d flags in the -h outputs, want every one: %v", len(flags), flags)
	}
	for _, f := range flags {
		if !documented("-" + f) {
			t.Errorf("man/tlsmgrctl.1 does not describe the flag -%s", f)
		}
	}
}

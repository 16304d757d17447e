package integration

// TestPostfixVersions: our tlsmgr as master.cf's tlsmgr service under
// three Postfix releases, the host's and two other Debian releases'
// (scripts/debian-root), each beside the same release's own tlsmgr. Postfix
// 3.6 and later wait for the server to announce the protocol; 3.5 and
// earlier send their request first. Both kinds must work with ours as with
// Postfix's.

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// postfixRelease is one Postfix under test: the host's, or a Debian
// release's in a root made by scripts/debian-root.
type postfixRelease struct {
	name   string // subtest
	suite  string // Debian suite for scripts/debian-root; "": the host's Postfix
	series string // the release series the suite has ("3.5"); "": any (the host's)
	// overrides: our daemon with tlsmgr_protocol_announcement set.
	overrides []announcementOverride
}

type announcementOverride struct {
	mode  string // yes or no
	wrong bool   // the mode does not fit this Postfix: our warning is expected
	// works: resumption must work (a wrong mode with a client that waits
	// for the announcement is rescued by the late announcement; a client
	// that speaks first may read the announcement as its reply).
	works bool
}

var postfixReleases = []postfixRelease{
	{name: "host"},
	{name: "bullseye", suite: "bullseye", series: "3.5", overrides: []announcementOverride{
		{mode: "yes", wrong: true},
		{mode: "no", works: true},
	}},
	{name: "trixie", suite: "trixie", series: "3.10", overrides: []announcementOverride{
		{mode: "no", wrong: true, works: true},
	}},
}

// The checks, in the order of the table. The impl-specific ones are not
// compared between ours and Postfix's.
var versionChecks = []struct {
	key, label string
	compare    bool // ours must give what Postfix's own gives
}{
	{"tls12", "TLS 1.2 session id (-no_ticket)", true},
	{"tls13", "TLS 1.3 ticket", true},
	{"smtp", "smtp: Reusing old session", true},
	{"jail", "tlsmgr chrooted, as postfix", true},
	{"reload", "postfix reload: new tlsmgr serves", true},
	{"warnings", "smtpd/smtp warnings on tlsmgr", true},
	{"kept", "reload: earlier session resumed", false},
	{"startup", "start-up line (ours)", false},
	{"mismatches", "protocol_mismatches (ours)", false},
}

var (
	startupLine = regexp.MustCompile(`postfix/tlsmgr\[(\d+)\]: .*Postfix (\S+) found .*so the protocol is (not )?announced`)
	// A warning of smtpd or smtp about tlsmgr, or its consequence.
	tlsmgrWarning = regexp.MustCompile(`(?m)^.*postfix(-relay)?/smtpd?\[\d+\]: warning: .*(tlsmgr|disabling TLS support).*$`)
	// Our warning when the mode does not fit the client.
	announcementWarning = regexp.MustCompile(`(?m)^.*postfix/tlsmgr\[\d+\]: warning: .*tlsmgr_protocol_announcement.*$`)
)

func TestPostfixVersions(t *testing.T) {
	need(t, true, "postfix", "postconf", "openssl", "go", "chroot")
	tlsmgr := buildStatic(t, "tlsmgr")

	var mu sync.Mutex
	var report []*versionReport
	t.Cleanup(func() {
		if len(report) > 0 {
			sort.Slice(report, func(i, j int) bool { return report[i].order < report[j].order })
			t.Logf("ours against Postfix's own tlsmgr:\n%s%s", resultsTable(report), overridesTable(report))
		}
	})

	for i, rel := range postfixReleases {
		t.Run(rel.name, func(t *testing.T) {
			t.Parallel()
			root := ""
			if rel.suite != "" {
				root = debianRoot(t, rel.suite)
			}
			r := &versionReport{order: i, name: rel.name, root: root, overrides: make(map[string]string)}
			r.version = strings.TrimSpace(output(t, rootCommand(root, "postconf", "-dh", "mail_version")))
			r.openssl = strings.Fields(output(t, rootCommand(root, "openssl", "version")) + " ?")[1]
			if rel.series != "" && !strings.HasPrefix(r.version, rel.series+".") {
				t.Fatalf("%s's Postfix is %s, want %s.x", rel.suite, r.version, rel.series)
			}
			r.ours, r.postfix = make(map[string]string), make(map[string]string)
			t.Cleanup(func() {
				for _, c := range versionChecks {
					if c.compare && r.ours[c.key] != r.postfix[c.key] {
						t.Errorf("%s: ours %q, Postfix's own %q", c.label, r.ours[c.key], r.postfix[c.key])
					}
				}
				t.Logf("Postfix %s (OpenSSL %s):\n%s%s", r.version, r.openssl, resultsTable([]*versionReport{r}), overridesTable([]*versionReport{r}))
				mu.Lock()
				report = append(report, r)
				mu.Unlock()
			})
			t.Run("ours", func(t *testing.T) {
				t.Parallel()
				runVersionChecks(t, root, tlsmgr, r.version, r.ours)
			})
			t.Run("postfix", func(t *testing.T) {
				t.Parallel()
				runVersionChecks(t, root, "", r.version, r.postfix)
			})
			for _, o := range rel.overrides {
				t.Run("announcement="+o.mode, func(t *testing.T) {
					t.Parallel()
					r.setOverride(o.mode, "FAIL") // unless it returns
					r.setOverride(o.mode, runOverride(t, root, tlsmgr, o))
				})
			}
		})
	}
}

// versionReport is one Postfix's results, check key to outcome, and our
// daemon's with tlsmgr_protocol_announcement set, mode to outcome.
type versionReport struct {
	order                        int // in postfixReleases
	name, root, version, openssl string
	ours, postfix                map[string]string
	mu                           sync.Mutex // for overrides
	overrides                    map[string]string
}

func (r *versionReport) setOverride(mode, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.overrides[mode] = outcome
}

// runVersionChecks makes an instance of the root's Postfix with tlsmgr
// ("": Postfix's own) as master.cf's tlsmgr and puts every check's outcome
// into res. A check that fails leaves "FAIL" (and fails the test).
func runVersionChecks(t *testing.T, root, tlsmgr, version string, res map[string]string) {
	ours := tlsmgr != ""
	in := newInstanceWith(t, tlsmgr, instanceOptions{root: root})
	check := func(key string, f func(t *testing.T) string) {
		res[key] = "FAIL"
		t.Run(key, func(t *testing.T) { res[key] = f(t) })
	}
	tls12 := []string{"-tls1_2", "-no_ticket"}
	sess12 := filepath.Join(t.TempDir(), "tls12.pem")
	resumed := func(t *testing.T, args []string, sess string) string {
		if got := in.handshake(t, args, sess, ""); got != "New" {
			t.Fatalf("first handshake %v: %s, want New", args, got)
		}
		if got := in.handshakeWait(t, args, "", sess, 0); got != "Reused" {
			t.Errorf("second handshake %v: %s, want Reused", args, got)
			return "not resumed"
		}
		return "resumed"
	}

	check("tls12", func(t *testing.T) string { return resumed(t, tls12, sess12) })
	check("tls13", func(t *testing.T) string {
		return resumed(t, []string{"-tls1_3"}, filepath.Join(t.TempDir(), "tls13.pem"))
	})
	check("smtp", func(t *testing.T) string {
		in.sendMail(t)
		waitFor(t, 30*time.Second, "the first delivery", func() bool { return in.delivered() >= 1 })
		if in.smtpReused() {
			t.Error("the first delivery already reused a session")
			return "first reused"
		}
		in.sendMail(t)
		waitFor(t, 30*time.Second, "the second delivery", func() bool { return in.delivered() >= 2 })
		if !in.smtpReused() {
			t.Error("the second delivery did not reuse the session")
			return "not reused"
		}
		return "reused"
	})
	check("jail", func(t *testing.T) string {
		// procs sees master(8) too (the processes checked after the stop).
		procs := in.procs()
		master := false
		for _, name := range procs {
			master = master || name == "master"
		}
		if !master {
			t.Errorf("no master(8) among the instance's processes %v", procs)
		}
		pid := in.serverPID()
		if pid == 0 {
			t.Fatal("no tlsmgr runs")
		}
		if err := in.checkJail(pid); err != nil {
			t.Error(err)
			return "no"
		}
		return "yes"
	})
	if ours {
		check("mismatches", func(t *testing.T) string {
			n := in.mismatches(t)
			if n != 0 {
				t.Errorf("protocol_mismatches = %d, want 0", n)
			}
			return strconv.Itoa(n)
		})
	}
	res["kept"] = "FAIL" // set by the reload check
	check("reload", func(t *testing.T) string {
		old := in.serverPID()
		if old == 0 {
			t.Fatal("no tlsmgr runs before the reload")
		}
		// Not in.script: that fails the instance's test, not this one.
		if out, err := in.command("postfix", "-c", filepath.Join(in.inside(), "etc"), "reload").CombinedOutput(); err != nil {
			t.Fatalf("postfix reload: %v\n%s", err, out)
		}
		waitFor(t, 20*time.Second, "the old tlsmgr to exit", func() bool { return in.serverPID() != old })
		// The session saved before the reload, from the new daemon.
		got, out, err := in.sClient(tls12, "", sess12, 0)
		switch {
		case err != nil:
			t.Logf("resume the earlier session: %v\n%s", err, out)
			res["kept"] = "FAIL"
		case got == "Reused":
			res["kept"] = "yes"
		default:
			// Postfix's tlsmgr truncates its caches at start (docs/differences.md).
			res["kept"] = "no (cache cleared)"
		}
		if ours && res["kept"] != "yes" {
			t.Errorf("after postfix reload the session saved before it was not resumed (%s)", res["kept"])
		}
		resumed(t, tls12, filepath.Join(t.TempDir(), "after.pem"))
		pid := in.serverPID()
		if pid == 0 || pid == old {
			t.Fatalf("tlsmgr pid %d after reload, was %d", pid, old)
		}
		return "yes"
	})
	check("warnings", func(t *testing.T) string {
		w := tlsmgrWarning.FindAllString(in.maillog(), -1)
		if len(w) > 0 {
			t.Errorf("smtpd or smtp warned about tlsmgr:\n%s", strings.Join(w, "\n"))
			return fmt.Sprintf("%d", len(w))
		}
		return "none"
	})
	if ours {
		check("startup", func(t *testing.T) string {
			got, err := checkStartupLines(in.maillog(), version)
			if err != nil {
				t.Error(err)
			}
			return got
		})
	}
	if t.Failed() {
		t.Logf("maillog:\n%s", in.maillogForReport())
	}
}

// postfixCheckNoise: postfix check's complaints about daemon_directory's
// symbolic links (Postfix 3.5 has one per program).
var postfixCheckNoise = regexp.MustCompile(`(?m)^.*postfix-script\[\d+\]: warning: symlink leaves directory: .*\n`)

// maillogForReport is the maillog without postfixCheckNoise.
func (in *instance) maillogForReport() string {
	return postfixCheckNoise.ReplaceAllString(in.maillog(), "")
}

// checkStartupLines finds our daemon's start-up lines on the protocol
// announcement (one per start) and checks each names the version and the
// mode that fits it: announced from 3.6 on. It returns the first's
// "version, mode".
func checkStartupLines(log, version string) (string, error) {
	lines := startupLine.FindAllStringSubmatch(log, -1)
	if len(lines) == 0 {
		return "missing", fmt.Errorf("no start-up line matching %q", startupLine)
	}
	wantNot := "not "
	if postfixAtLeast(version, 3, 6) {
		wantNot = ""
	}
	pids := make(map[string]bool)
	for _, m := range lines {
		if pids[m[1]] {
			return m[2] + ", twice", fmt.Errorf("tlsmgr[%s] logged its start-up line more than once", m[1])
		}
		pids[m[1]] = true
		if m[2] != version || m[3] != wantNot {
			return m[2] + ", " + m[3] + "announced", fmt.Errorf("start-up line %q, want Postfix %s and %sannounced", m[0], version, wantNot)
		}
	}
	return version + ", " + wantNot + "announced", nil
}

// postfixAtLeast reports whether the Postfix version (3.5.25) is at least
// major.minor.
func postfixAtLeast(version string, major, minor int) bool {
	f := strings.SplitN(version, ".", 3)
	if len(f) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(f[0])
	mi, _ := strconv.Atoi(f[1])
	return ma > major || ma == major && mi >= minor
}

// runOverride runs our daemon with tlsmgr_protocol_announcement = o.mode
// under the root's Postfix and checks our warning, and the resumption
// when the mode must work. It returns what happened, for the table.
func runOverride(t *testing.T, root, tlsmgr string, o announcementOverride) string {
	in := newInstanceWith(t, tlsmgr, instanceOptions{root: root, settings: []string{"tlsmgr_protocol_announcement=" + o.mode}})
	var outcome []string
	for _, tc := range []struct {
		name string
		args []string
	}{{"TLS 1.2 session id", []string{"-tls1_2", "-no_ticket"}}, {"TLS 1.3 ticket", []string{"-tls1_3"}}} {
		sess := filepath.Join(t.TempDir(), "sess.pem")
		first, out, err := in.sClient(tc.args, sess, "", 1500*time.Millisecond)
		if err != nil {
			outcome = append(outcome, tc.name+": "+err.Error())
			if o.works {
				t.Errorf("%s: %v\n%s", tc.name, err, out)
			}
			continue
		}
		second, out, err := in.sClient(tc.args, "", sess, 0)
		if err != nil {
			second = err.Error()
		}
		outcome = append(outcome, fmt.Sprintf("%s: %s then %s", tc.name, first, second))
		if o.works && (first != "New" || second != "Reused") {
			t.Errorf("%s: %s then %s, want New then Reused\n%s", tc.name, first, second, out)
		}
	}
	if o.wrong {
		waitFor(t, 10*time.Second, "our warning on tlsmgr_protocol_announcement", func() bool {
			return announcementWarning.MatchString(in.maillog())
		})
	}
	log := in.maillog()
	warned := announcementWarning.FindAllString(log, -1)
	if !o.wrong && len(warned) > 0 {
		t.Errorf("tlsmgr_protocol_announcement = %s fits, yet our daemon warned:\n%s", o.mode, strings.Join(warned, "\n"))
	}
	n := in.mismatches(t)
	if o.wrong != (n > 0) {
		t.Errorf("protocol_mismatches = %d with tlsmgr_protocol_announcement = %s", n, o.mode)
	}
	smtpd := tlsmgrWarning.FindAllString(log, -1)
	if o.works && len(smtpd) > 0 {
		t.Errorf("smtpd or smtp warned about tlsmgr:\n%s", strings.Join(smtpd, "\n"))
	}
	got := fmt.Sprintf("%s; our warnings %d, protocol_mismatches %d; smtpd/smtp warnings on tlsmgr %d",
		strings.Join(outcome, ", "), len(warned), n, len(smtpd))
	t.Logf("tlsmgr_protocol_announcement = %s: %s", o.mode, got)
	for _, l := range append(warned, smtpd...) {
		t.Log(l)
	}
	if t.Failed() {
		t.Logf("maillog:\n%s", in.maillogForReport())
	}
	return got
}

// mismatches is our daemon's protocol_mismatches counter, by a stats
// request on master(8)'s socket (as tlsmgrctl -s SOCKET stats asks).
func (in *instance) mismatches(t *testing.T) int {
	t.Helper()
	c := client.New(filepath.Join(in.dir, "spool", "private", "tlsmgr"), client.Options{Timeout: 10 * time.Second})
	defer c.Close()
	pairs, err := c.Stats(context.Background())
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	for _, p := range pairs {
		if p[0] == "protocol_mismatches" {
			n, err := strconv.Atoi(p[1])
			if err != nil {
				t.Fatalf("stats protocol_mismatches = %q", p[1])
			}
			return n
		}
	}
	t.Fatal("stats has no protocol_mismatches")
	return 0
}

// resultsTable lays the reports out as a table: a row per check, a
// column per Postfix and tlsmgr.
func resultsTable(reports []*versionReport) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	head, sub := "check", ""
	for _, r := range reports {
		head += fmt.Sprintf("\t%s: Postfix %s\t", r.name, r.version)
		sub += "\tours\tPostfix's"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sub)
	for _, c := range versionChecks {
		line := c.label
		for _, r := range reports {
			line += "\t" + orDash(r.ours[c.key]) + "\t" + orDash(r.postfix[c.key])
		}
		fmt.Fprintln(w, line)
	}
	w.Flush()
	return b.String()
}

// overridesTable lists our daemon's results with the mode set.
func overridesTable(reports []*versionReport) string {
	var b strings.Builder
	for _, r := range reports {
		modes := make([]string, 0, len(r.overrides))
		for m := range r.overrides {
			modes = append(modes, m)
		}
		sort.Strings(modes)
		for _, m := range modes {
			fmt.Fprintf(&b, "%s (Postfix %s), ours with tlsmgr_protocol_announcement = %s: %s\n", r.name, r.version, m, r.overrides[m])
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// buildStatic builds the command name (tlsmgr, tlsmgrctl) without cgo,
// for the Debian roots (their C library is not the host's), and checks it
// has no ELF interpreter.
func buildStatic(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/"+name)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bin := filepath.Join(dir, name)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is not static: it has an ELF interpreter", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("%s is not static: it needs %v", bin, libs)
	}
	return bin
}

// debianRoot returns the root of the Debian suite made by
// scripts/debian-root, building it first if needed (debootstrap, ~1 min).
func debianRoot(t *testing.T, suite string) string {
	t.Helper()
	base := os.Getenv("TLSMGR_ROOTS")
	if base == "" {
		base = "/var/cache/tlsmgr-roots"
	}
	// The script's stamp: a complete root needs no debootstrap.
	if _, err := os.Stat(filepath.Join(base, suite, ".tlsmgr-root")); err != nil {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			testenv.Missing(t, "debootstrap (to build the "+suite+" root)")
		}
	}
	out := output(t, exec.Command(filepath.Join(repoRoot(t), "scripts", "debian-root"), suite))
	lines := strings.Fields(out)
	if len(lines) == 0 {
		t.Fatalf("scripts/debian-root %s printed no path", suite)
	}
	return lines[len(lines)-1]
}

// output runs cmd and returns its standard output.
func output(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
	}
	return string(out)
}

package redismatrix

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

const module = "github.com/gotlsmgr/tlsmgr/"

// childRuns are the go test commands run for each flavour, from the
// repository's root, with TLSMGR_REDIS set. The packages run whole except
// TestHostile*, whose servers are fakes (internal/redisfake), not the
// flavour's (16 s each time for nothing). Of the integration package, the
// fleet tests of daemons on one server; TestFleetOutageAcrossEpochs stays
// host-only: it waits for real minute-long epochs (110 s) and asks the
// server nothing the ring tests do not.
var childRuns = [][]string{
	{"-skip", "^TestHostile", "./internal/redistest", "./internal/scache/redisstore", "./internal/tktkey/redisring", "./internal/fleet/redisconn"},
	{"-run", "^(TestFleetTicketKeys|TestFleetSharedCaches|TestFleetRedisOutage)$", "./integration"},
}

// required are the tests that must have run, against the flavour's
// server, for each flavour: the single server, tracking, outage, the ring,
// TLS, authentication, Sentinel and Cluster. Whatever else the packages
// hold runs too and must pass.
var required = map[string][]string{
	"internal/redistest": {"TestFlavourInUse", "TestSingle", "TestSingleWithConfig", "TestSingleTLS", "TestSentinel", "TestCluster"},
	"internal/scache/redisstore": {"TestTwoMembers", "TestSharedSemantics", "TestDumpAndFlushShared", "TestExpiry",
		"TestTrackedLookups", "TestWritesBehind", "TestOutage", "TestOutageBounds", "TestErrorReplies", "TestCluster"},
	"internal/tktkey/redisring": {"TestOneKeyPerEpoch", "TestSealKeyRotation", "TestOutageIsAnErrorInTime", "TestRecordsExpire", "TestCluster"},
	"internal/fleet/redisconn": {"TestSingleOps", "TestAuthentication", "TestTLSServer", "TestPausedServerDeadline",
		"TestBreakerOnPausedServer", "TestStoppedServer", "TestIdleClientFollowsOutage", "TestSentinelFailover", "TestClusterNodePaused", "TestRealServersThroughGuard"},
	"integration": {"TestFleetTicketKeys", "TestFleetSharedCaches", "TestFleetRedisOutage"},
}

// knownFailures are what fails on a flavour and why: flavour, then
// "package.Test", then a text the test's output must hold. Such a test
// must fail, and with that text: once it passes (or fails otherwise), this
// table and docs/development.md are wrong and the matrix says so.
var knownFailures = map[string]map[string]string{
	"bullseye-redis": {
		// The tests, not the daemon, ask what Redis 6.0 lacks. This one
		// asks COMMAND DOCS (Redis 7.0), CLIENT INFO (6.2) and CLUSTER
		// SHARDS (7.0) to measure their replies through the guard.
		"internal/fleet/redisconn.TestRealServersThroughGuard": "ERR Unknown subcommand",
		// Its faults: enable-debug-command in the server's configuration
		// (7.0; 6.0 refuses to start with it, and has DEBUG always on),
		// CLIENT PAUSE ... WRITE (6.2).
		"internal/scache/redisstore.TestOwnWritesNeverReadBackOlder": "'enable-debug-command yes'",
		// CLIENT PAUSE ms WRITE (6.2).
		"internal/scache/redisstore.TestUnsharedUpdatesLogged": "Unknown subcommand or wrong number of arguments for 'PAUSE'",
	},
}

// serverLine is what internal/redistest logs for each server it started
// and checked: "redistest: NAME on ADDR is PRODUCT VERSION (FLAVOUR)".
var serverLine = regexp.MustCompile(`redistest: \S+ on \S+ is (redis|valkey) (\S+) \(([a-z-]+)\)`)

// result is one top-level test of a child run.
type result struct {
	pkg, test string // "internal/scache/redisstore", "TestOutage"
	action    string // pass, fail, skip; "" if it never ended
	elapsed   float64
	servers   map[string]bool // "valkey 8.1.1 (trixie-valkey)"
	output    strings.Builder
}

func (r *result) key() string { return r.pkg + "." + r.test }

// TestFlavours runs the fleet tests against every flavour but the host's
// (which the rest of the suite runs against), one flavour at a time.
func TestFlavours(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (to build the Debian roots and chroot into them)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "go")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	roots := map[string]string{} // suite: what went wrong preparing it
	for _, f := range redistest.Flavours {
		if f.Suite == "" {
			continue
		}
		if _, done := roots[f.Suite]; !done {
			roots[f.Suite] = prepareRoot(t, repo, f.Suite)
		}
	}
	for _, f := range redistest.Flavours {
		if f.Suite == "" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			if why := roots[f.Suite]; why != "" {
				testenv.Missing(t, why)
			}
			if why := f.Unavailable(); why != "" {
				testenv.Missing(t, why)
			}
			runFlavour(t, goBin, repo, f)
		})
	}
}

// prepareRoot builds (once) and mounts the suite's root with
// scripts/debian-root, as CI does before the tests; it returns what is
// missing to do so, or "". The mounts stay: the script's --unmount is for
// when no test may be using the root any more (CI's exit trap).
func prepareRoot(t *testing.T, repo, suite string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(redistest.RootsDir(), suite, ".tlsmgr-root")); err != nil {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			return "debootstrap (to build the " + suite + " root)"
		}
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(repo, "scripts", "debian-root"), suite)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/debian-root %s: %v\n%s", suite, err, stderr.String())
	}
	t.Logf("%s root %s ready in %v", suite, strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
	return ""
}

func runFlavour(t *testing.T, goBin, repo string, f redistest.Flavour) {
	start := time.Now()
	results := map[string]*result{}
	var order []*result
	for _, args := range childRuns {
		runChild(t, goBin, repo, f, args, results, &order)
	}
	took := time.Since(start)

	known := knownFailures[f.Name]
	counts := map[string]int{}
	for _, r := range order {
		counts[r.action]++
		why, isKnown := known[r.key()]
		switch {
		case r.action == "fail" && isKnown && strings.Contains(r.output.String(), why):
			counts["known"]++
		case r.action == "fail" && isKnown:
			t.Errorf("%s fails on %s, but not with %q as known:\n%s", r.key(), f.Name, why, r.output.String())
		case isKnown:
			t.Errorf("%s %s on %s, where it is known to fail with %q: update knownFailures and docs/development.md", r.key(), orNone(r.action), f.Name, why)
		case r.action == "fail", r.action == "":
			t.Errorf("%s %s on %s:\n%s", r.key(), orNone(r.action), f.Name, r.output.String())
		}
		for s := range r.servers {
			if !strings.HasSuffix(s, "("+f.Name+")") {
				t.Errorf("%s ran against %s, not %s", r.key(), s, f.Name)
			}
		}
	}
	for pkg, tests := range required {
		for _, name := range tests {
			r := results[pkg+"."+name]
			switch {
			case r == nil:
				t.Errorf("%s.%s did not run on %s", pkg, name, f.Name)
			case r.action == "skip":
				t.Errorf("%s.%s skipped on %s:\n%s", pkg, name, f.Name, r.output.String())
			case len(r.servers) == 0:
				t.Errorf("%s.%s started no %s server (no %q line):\n%s", pkg, name, f.Name, "redistest: ... is", r.output.String())
			}
		}
	}
	for key := range known {
		if results[key] == nil {
			t.Logf("%s, known to fail on %s, did not run (renamed or gone? then update knownFailures)", key, f.Name)
		}
	}

	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "package\ttest\tresult\ttime\tserver\n")
	for _, r := range order {
		var servers []string
		for s := range r.servers {
			servers = append(servers, strings.TrimSuffix(s, " ("+f.Name+")"))
		}
		sort.Strings(servers)
		action := orNone(r.action)
		if _, ok := known[r.key()]; ok && r.action == "fail" {
			action = "fail (known)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.2fs\t%s\n", r.pkg, r.test, action, r.elapsed, orDash(strings.Join(servers, ", ")))
	}
	w.Flush()
	t.Logf("%s: %d tests in %v: %d passed, %d failed (%d of them known), %d skipped\n%s",
		f.Name, len(order), took.Round(time.Second), counts["pass"], counts["fail"], counts["known"], counts["skip"], b.String())
}

// runChild runs one go test command for flavour f and adds its tests'
// results. A failing child is not by itself an error: its tests say what
// failed; a child that fails without a failed test (a build failure, a
// timeout, a panic) is.
func runChild(t *testing.T, goBin, repo string, f redistest.Flavour, args []string, results map[string]*result, order *[]*result) {
	t.Helper()
	argv := append([]string{"test", "-race", "-count=1", "-timeout", "8m", "-json"}, args...)
	cmd := exec.Command(goBin, argv...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), redistest.FlavourEnv+"="+f.Name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pkgOut := map[string]*strings.Builder{}
	pkgAction := map[string]string{}
	failedTests := 0
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var garbage strings.Builder
	for sc.Scan() {
		var e struct {
			Action, Package, Test, Output string
			Elapsed                       float64
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			garbage.Write(sc.Bytes())
			garbage.WriteByte('\n')
			continue
		}
		pkg := strings.TrimPrefix(e.Package, module)
		if e.Test == "" {
			if pkgOut[pkg] == nil {
				pkgOut[pkg] = &strings.Builder{}
			}
			pkgOut[pkg].WriteString(e.Output)
			if e.Action == "pass" || e.Action == "fail" || e.Action == "skip" {
				pkgAction[pkg] = e.Action
			}
			continue
		}
		top, _, sub := strings.Cut(e.Test, "/")
		r := results[pkg+"."+top]
		if r == nil {
			r = &result{pkg: pkg, test: top, servers: map[string]bool{}}
			results[r.key()] = r
			*order = append(*order, r)
		}
		r.output.WriteString(e.Output)
		if m := serverLine.FindStringSubmatch(e.Output); m != nil {
			r.servers[m[1]+" "+m[2]+" ("+m[3]+")"] = true
		}
		if !sub && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") {
			r.action, r.elapsed = e.Action, e.Elapsed
			if e.Action == "fail" {
				failedTests++
			}
		}
	}
	werr := cmd.Wait()
	t.Logf("%s=%s go %s: %v, %v", redistest.FlavourEnv, f.Name, strings.Join(argv, " "), time.Since(start).Round(time.Millisecond), orOK(werr))
	// Build output comes as events of no package (ImportPath, not
	// Package, names it).
	build := ""
	if b := pkgOut[""]; b != nil {
		build = b.String()
	}
	for _, p := range slices.Sorted(maps.Keys(pkgAction)) {
		if pkgAction[p] == "fail" && !hasFailedTest(results, p) {
			t.Errorf("%s failed on %s without a failed test:\n%s%s", p, f.Name, build, pkgOut[p].String())
		}
	}
	if werr != nil && failedTests == 0 {
		t.Errorf("go test failed on %s without a failed test: %v\n%s%s%s", f.Name, werr, build, garbage.String(), stderr.String())
	}
}

func hasFailedTest(results map[string]*result, pkg string) bool {
	for _, r := range results {
		if r.pkg == pkg && r.action == "fail" {
			return true
		}
	}
	return false
}

func orNone(action string) string {
	if action == "" {
		return "did not finish"
	}
	return action
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

package integration

// TestPostfixEnable: tlsmgrctl postfix enable, status, disable and
// state-files against the Postfix of three Debian releases, as an
// administrator runs them: the switch is proved, postconf stops calling
// our parameters unused, master(8) starts our daemon without traffic,
// and a daemon that cannot start, or a forced protocol mode the installed
// Postfix does not speak, leaves master.cf on Postfix's own tlsmgr.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPostfixEnable(t *testing.T) {
	need(t, true, "postfix", "postconf", "go", "chroot")
	// Beside TestPackageInstall: both mostly wait for Postfix.
	t.Parallel()
	tlsmgr, ctl := buildStatic(t, "tlsmgr"), buildStatic(t, "tlsmgrctl")
	for _, rel := range postfixReleases {
		t.Run(rel.name, func(t *testing.T) {
			t.Parallel()
			root := ""
			if rel.suite != "" {
				root = debianRoot(t, rel.suite)
			}
			testEnable(t, root, tlsmgr, ctl)
		})
	}
}

// ctlRun is one tlsmgrctl run in the instance's root.
type ctlRun struct {
	out  string
	code int
	took time.Duration
}

func testEnable(t *testing.T, root, tlsmgr, ctl string) {
	metricsPort := freePort(t)
	in := newInstanceWith(t, "", instanceOptions{root: root, settings: []string{
		// A failed start throttles the service for this long: the test
		// waits it out once.
		"service_throttle_time=5s",
		"smtpd_tls_session_cache_max_entries=5000",
		fmt.Sprintf("tlsmgr_metrics_address=127.0.0.1:%d", metricsPort),
	}})
	etc := filepath.Join(in.inside(), "etc")
	install := func(src, dst string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, b, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Where a package puts it: daemon_directory.
	install(tlsmgr, filepath.Join(in.dir, "libexec", "tlsmgr-go"))
	install(ctl, filepath.Join(in.dir, "tlsmgrctl"))
	run := func(args ...string) ctlRun {
		t.Helper()
		start := time.Now()
		cmd := in.command(filepath.Join(in.inside(), "tlsmgrctl"), args...)
		out, err := cmd.CombinedOutput()
		r := ctlRun{out: string(out), took: time.Since(start)}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("tlsmgrctl %v: %v", args, err)
		}
		t.Logf("tlsmgrctl %s (exit %d, %v):\n%s", strings.Join(args, " "), r.code, r.took.Round(time.Millisecond), r.out)
		return r
	}
	check := func() string {
		t.Helper()
		out, _ := in.command("postfix", "-c", etc, "check").CombinedOutput()
		return string(out)
	}
	command := func() string {
		t.Helper()
		out, err := in.command("postconf", "-c", etc, "-hF", "tlsmgr/unix/command").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out) + " -")[0]
	}
	socket := filepath.Join(in.inside(), "spool", "private", "tlsmgr")
	version := strings.TrimSpace(output(t, in.command("postconf", "-dh", "mail_version")))
	speaksFirst := !postfixAtLeast(version, 3, 6)

	// Before: Postfix's own tlsmgr, our parameters unknown to postconf.
	if r := run("postfix", "status", "-c", etc); r.code != 0 || !strings.Contains(r.out, "master.cf runs tlsmgr for") ||
		!strings.Contains(r.out, "(Postfix's own)") {
		t.Fatalf("status before enable: exit %d", r.code)
	}
	if out := check(); !strings.Contains(out, "unused parameter: tlsmgr_metrics_address") {
		t.Fatalf("postfix check before enable does not call our parameter unused:\n%s", out)
	}
	// Our commands against Postfix's tlsmgr: told within a second or so,
	// not after the 10 s timeout.
	if r := run("-s", socket, "stats"); r.code != 2 || !strings.Contains(r.out, "needs tlsmgr-go") || r.took > 5*time.Second {
		t.Errorf("stats against Postfix's tlsmgr: exit %d after %v", r.code, r.took)
	}

	// A forced mode this Postfix does not speak: refused, nothing changed.
	wrong := "no"
	if speaksFirst {
		wrong = "yes"
	}
	in.postconf("tlsmgr_protocol_announcement=" + wrong)
	if r := run("postfix", "enable", "-c", etc); r.code != 2 || !strings.Contains(r.out, "tlsmgr_protocol_announcement = "+wrong) ||
		!strings.Contains(r.out, version) {
		t.Errorf("enable with tlsmgr_protocol_announcement = %s on Postfix %s: exit %d", wrong, version, r.code)
	}
	if c := command(); c != "tlsmgr" {
		t.Fatalf("a refused enable left master.cf running %s", c)
	}
	if out, err := in.command("postconf", "-c", etc, "-X", "tlsmgr_protocol_announcement").CombinedOutput(); err != nil {
		t.Fatalf("postconf -X: %v\n%s", err, out)
	}

	// Enable: switched, proved, postconf quiet about our parameters.
	r := run("postfix", "enable", "-c", etc)
	if r.code != 0 || !strings.Contains(r.out, "answers on "+socket) || !strings.Contains(r.out, "tlsmgrctl postfix disable") {
		t.Fatalf("enable: exit %d", r.code)
	}
	if mode := "announces the protocol"; speaksFirst == strings.Contains(r.out, mode) {
		t.Errorf("enable on Postfix %s: the mode line is wrong", version)
	}
	if c := command(); c != "tlsmgr-go" {
		t.Fatalf("master.cf runs %s after enable", c)
	}
	if out := check(); strings.Contains(out, "unused parameter") {
		t.Errorf("postfix check after enable:\n%s", out)
	}
	if r := run("postfix", "status", "-q", "-c", etc); r.code != 0 || r.out != "" {
		t.Errorf("status -q after enable: exit %d", r.code)
	}
	if r := run("-s", socket, "stats"); r.code != 0 || !strings.Contains(r.out, "smtpd_cache") {
		t.Errorf("stats through the enabled daemon: exit %d", r.code)
	}
	// master(8) starts it at reload, with no request: its metrics answer.
	// It wakes the service at once and every 60 s (wakeup 60); if the
	// exiting daemon takes the first wake-up, the next one starts the
	// new daemon.
	in.script("reload")
	reloaded := time.Now()
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	waitFor(t, 75*time.Second, "the metrics after postfix reload, with no traffic", func() bool {
		resp, err := http.Get(metrics)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), "tlsmgr_")
	})
	t.Logf("metrics answered %v after postfix reload", time.Since(reloaded).Round(time.Millisecond))
	state := run("postfix", "state-files", "-c", etc)
	for _, f := range []string{"smtpd_scache", "smtp_scache"} {
		if want := filepath.Join(in.inside(), "data", f); state.code != 0 || !strings.Contains(state.out, want+"\n") {
			t.Errorf("state-files lacks %s", want)
		}
	}
	if strings.Contains(state.out, "prng_exch") || strings.Contains(state.out, ".db\n") {
		t.Errorf("state-files lists Postfix's files")
	}

	// master(8)'s wake-up at the reload is closed at once, also by a
	// daemon that does not announce: no request timeout (10 s) to warn
	// about. Before, every wake-up did.
	time.Sleep(time.Until(reloaded.Add(12 * time.Second)))
	if strings.Contains(in.maillog(), "not complete within") {
		t.Errorf("master's wake-up trigger left a warning in the mail log")
	}

	// Enabled as above, the daemon has nothing to say about postconf.
	const unusedHint = "report smtpd_tls_session_cache_max_entries, tlsmgr_metrics_address as unused parameters"
	if strings.Contains(in.maillog(), unusedHint) {
		t.Errorf("the daemon enabled by tlsmgrctl says postconf reports its parameters unused")
	}

	// Disable: Postfix's own again, proved.
	if r := run("postfix", "disable", "-c", etc); r.code != 0 || !strings.Contains(r.out, "Postfix's tlsmgr answers") {
		t.Fatalf("disable: exit %d", r.code)
	}
	if c := command(); c != "tlsmgr" {
		t.Fatalf("master.cf runs %s after disable", c)
	}
	if r := run("postfix", "status", "-q", "-c", etc); r.code != 1 {
		t.Errorf("status -q after disable: exit %d, want 1", r.code)
	}
	wakeup := strings.TrimSpace(output(t, in.command("postconf", "-c", etc, "-hF", "tlsmgr/unix/wakeup")))
	if wakeup != "1000?" {
		t.Errorf("wakeup %q after disable, want Postfix's 1000?", wakeup)
	}

	// Switched by hand, without the declaration: the daemon says what
	// postconf will report, and how to avoid it.
	if out, err := in.command("postconf", "-c", etc, "-F", "tlsmgr/unix/command=tlsmgr-go").CombinedOutput(); err != nil {
		t.Fatalf("postconf -F: %v\n%s", err, out)
	}
	in.script("reload")
	waitFor(t, 20*time.Second, "tlsmgr-go switched by hand to answer", func() bool {
		return run("-s", socket, "-timeout", "3s", "stats").code == 0
	})
	if !strings.Contains(in.maillog(), unusedHint+": tlsmgrctl postfix enable declares them") {
		t.Errorf("the daemon switched to by hand does not say that postconf reports its parameters unused")
	}
	if r := run("postfix", "disable", "-c", etc); r.code != 0 {
		t.Fatalf("disable after the switch by hand: exit %d", r.code)
	}

	// A daemon that cannot start: its cache files cannot be made.
	data := filepath.Join(in.dir, "data")
	for _, f := range strings.Fields(state.out) {
		os.Remove(filepath.Join(in.root, f))
	}
	if err := os.Chown(data, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	r = run("postfix", "enable", "-c", etc, "-wait", "8s")
	if r.code != 2 || !strings.Contains(r.out, "master.cf runs tlsmgr again") {
		t.Errorf("enable with a daemon that cannot start: exit %d", r.code)
	}
	if c := command(); c != "tlsmgr" {
		t.Errorf("master.cf runs %s after a failed enable", c)
	}
	if !strings.Contains(in.maillog(), "fatal: smtpd TLS session cache") {
		t.Errorf("the mail log has no fatal line of tlsmgr-go")
	}
	uid, err := in.mailOwnerUID()
	if err != nil {
		t.Fatal(err)
	}
	var owner int
	fmt.Sscan(uid, &owner)
	if err := os.Chown(data, owner, -1); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
}

// Package contrib holds files for operators: tlsmgr-go.service, a systemd
// unit for the standalone daemon, and tlsmgr-go.default, its defaults
// file (EnvironmentFile=). This test checks the unit with systemd-analyze
// and runs the daemon the way the unit does. The packages
// (scripts/packages) install both, with the paths of each distribution
// family substituted.
package contrib

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

const (
	unitFile = "tlsmgr-go.service"
	// defaultsFile is installed as environmentFile.
	defaultsFile    = "tlsmgr-go.default"
	environmentFile = "/etc/default/tlsmgr-go"
)

// installedBinary is the ExecStart path: where make install puts the
// standalone daemon.
const installedBinary = "/usr/local/sbin/tlsmgr-go"

// socketArg is the ExecStart -listen argument.
const socketArg = "%t/tlsmgr-go/tlsmgr.sock"

var tlsmgrBin string

func TestMain(m *testing.M) {
	daemontest.Main(m, "..", func(b daemontest.Bins) { tlsmgrBin = b.Tlsmgr })
}

// settings are the unit's "Key=value" lines, by key, in order.
func settings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not Key=value: %q", unitFile, line)
		}
		m[k] = append(m[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func one(t *testing.T, s map[string][]string, key string) string {
	t.Helper()
	if len(s[key]) != 1 {
		t.Fatalf("%s: want one %s=, have %q", unitFile, key, s[key])
	}
	return s[key][0]
}

// The unit sandboxes the daemon (no root, no new privileges, a read-only
// system), runs the installed binary, and restarts it when it fails (the
// daemon_timeout watchdog exits 1 on purpose).
func TestUnitSettings(t *testing.T) {
	s := settings(t)
	for key, want := range map[string]string{
		"ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
		"Restart": "on-failure", "StateDirectory": "tlsmgr-go/standalone", "RuntimeDirectory": "tlsmgr-go",
		"User": "postfix", "Environment": "XDG_STATE_HOME=%S/tlsmgr-go/standalone",
		"EnvironmentFile": "-" + environmentFile,
	} {
		if got := one(t, s, key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	start := strings.Fields(one(t, s, "ExecStart"))
	if start[0] != installedBinary || len(start) < 3 || start[1] != "-listen" || start[2] != socketArg {
		t.Errorf("ExecStart=%s, want %s -listen %s ...", strings.Join(start, " "), installedBinary, socketArg)
	}
	if start[len(start)-1] != "$TLSMGR_OPTS" {
		t.Errorf("ExecStart=%s does not end in $TLSMGR_OPTS", strings.Join(start, " "))
	}
}

// The defaults file sets TLSMGR_OPTS, empty, and nothing else; the rest
// is comments.
func TestDefaultsFile(t *testing.T) {
	b, err := os.ReadFile(defaultsFile)
	if err != nil {
		t.Fatal(err)
	}
	var set []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line != "" && line[0] != '#' {
			set = append(set, line)
		}
	}
	if len(set) != 1 || set[0] != `TLSMGR_OPTS=""` {
		t.Errorf("%s sets %q, want only TLSMGR_OPTS=\"\"", defaultsFile, set)
	}
}

// verifiable writes a copy of the unit whose ExecStart is the binary
// just built (verify wants it to exist) and a man tree with the pages
// its Documentation= names, and returns the copy's path and a MANPATH.
func verifiable(t *testing.T) (unit, manpath string) {
	t.Helper()
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	old := "\nExecStart=" + installedBinary + " "
	if !bytes.Contains(text, []byte(old)) {
		t.Fatalf("%s has no %q", unitFile, old)
	}
	dir := t.TempDir()
	unit = filepath.Join(dir, unitFile)
	text = bytes.Replace(text, []byte(old), []byte("\nExecStart="+tlsmgrBin+" "), 1)
	if err := os.WriteFile(unit, text, 0o644); err != nil {
		t.Fatal(err)
	}
	manpath = filepath.Join(dir, "man")
	for _, page := range []string{"man8/tlsmgr-go.8", "man1/tlsmgrctl.1"} {
		b, err := os.ReadFile(filepath.Join("..", "man", filepath.Base(page)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(manpath, filepath.Dir(page)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(manpath, page), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return unit, manpath
}

// systemd-analyze verify accepts the unit without a word about it,
// Documentation= included (it runs man on each page); its sandbox rates
// "OK" or better.
func TestUnitVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testenv.Missing(t, "systemd-analyze")
	}
	if _, err := exec.LookPath("man"); err != nil {
		testenv.Missing(t, "man")
	}
	unit, manpath := verifiable(t)
	env := append(os.Environ(), "MANPATH="+manpath, "SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0")
	cmd := exec.Command("systemd-analyze", "verify", unit)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case line == "":
		case strings.Contains(line, "tlsmgr"):
			t.Errorf("systemd-analyze verify: %s", line)
		default: // about a unit of the machine's, not ours
			t.Logf("systemd-analyze verify: %s", line)
		}
	}
	// Exposure 0 (best) to 10; "OK" ends below 5.
	cmd = exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=25", unit)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	} else if i := bytes.Index(out, []byte("Overall exposure level")); i >= 0 {
		t.Logf("%s", bytes.TrimSpace(out[i:]))
	}
}

// Without systemd, the daemon runs as the unit runs it: as User=, never
// root, with XDG_STATE_HOME=%S and the two directories systemd would
// make for that account. It serves, keeps its state in the state
// directory, owned by that account, and stops cleanly on SIGTERM.
func TestUnitRunsAsMailOwner(t *testing.T) {
	testenv.NeedRoot(t)
	s := settings(t)
	name := one(t, s, "User")
	u, err := user.Lookup(name)
	if err != nil {
		testenv.Missing(t, "the account "+name+" (Debian's postfix makes it)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stateRoot, runRoot := filepath.Join(base, "lib"), filepath.Join(base, "run") // %S, %t
	mkdir := func(root, key, modeKey string) string {
		mode, err := strconv.ParseUint(one(t, s, modeKey), 8, 32)
		if err != nil {
			t.Fatalf("%s=%s: %v", modeKey, one(t, s, modeKey), err)
		}
		dir := filepath.Join(root, one(t, s, key))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, os.FileMode(mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	stateDir := mkdir(stateRoot, "StateDirectory", "StateDirectoryMode")
	mkdir(runRoot, "RuntimeDirectory", "RuntimeDirectoryMode")

	var args []string
	for _, f := range strings.Fields(one(t, s, "ExecStart"))[1:] {
		if f == "$TLSMGR_OPTS" {
			continue // the defaults file: none
		}
		args = append(args, strings.ReplaceAll(f, "%t", runRoot))
	}
	xdg, _ := strings.CutPrefix(one(t, s, "Environment"), "XDG_STATE_HOME=")
	xdg = strings.ReplaceAll(xdg, "%S", stateRoot)
	// The daemon's state directory, $XDG_STATE_HOME/tlsmgr, must be
	// inside StateDirectory=, the only place it may write to.
	state := filepath.Join(xdg, "tlsmgr")
	if !strings.HasPrefix(state, stateDir+"/") {
		t.Fatalf("state directory %s is outside StateDirectory= (%s)", state, stateDir)
	}
	cmd := exec.Command(tlsmgrBin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "XDG_STATE_HOME=" + xdg}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	sock := filepath.Join(runRoot, "tlsmgr-go", "tlsmgr.sock")
	if args[0] != "-listen" || args[1] != sock {
		t.Fatalf("ExecStart arguments %q, want -listen %s", args, sock)
	}
	p := daemontest.StartCmd(t, cmd)
	defer p.Kill()
	p.WaitServing(t, sock)

	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 || daemontest.FileOwner(fi) != uid {
		t.Errorf("socket %v (%v), want mode 0660 and owner %s", fi.Mode(), err, name)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 || daemontest.FileOwner(fi) != uid {
		t.Errorf("state directory %s: %v, want mode 0700 and owner %s", state, err, name)
	}
	exch := filepath.Join(state, "prng_exch")
	fi, err := os.Stat(exch)
	if err != nil || fi.Size() != 1024 || daemontest.FileOwner(fi) != uid || fi.Mode().Perm() != 0o600 {
		t.Errorf("exchange file %s: %v, want 1024 bytes, 0600, owner %s", exch, err, name)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if want := fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid); !strings.Contains(string(status), want) {
		t.Errorf("daemon does not run as %s only:\n%s", name, status)
	}
	p.Stop(t)
	p.NoWarnings(t)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after SIGTERM: %v", err)
	}
}

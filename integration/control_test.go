package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// tlsmgrctlAs runs tlsmgrctl with the given credentials (nil: ours) and
// returns its output and exit status.
func tlsmgrctlAs(t *testing.T, cred *syscall.Credential, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(tlsmgrctlBin, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestControlCommands: tlsmgrctl's stats table and JSON, dump, keys and
// flush against a real daemon; flush is refused to an account that can
// reach the socket but is neither root nor the mail owner.
func TestControlCommands(t *testing.T) {
	need(t, true)
	s := newStandalone(t)
	s.start(t)
	ctx := context.Background()
	c := s.client()
	defer c.Close()
	ids := []string{"smtp&secret-destination.example&25", "second-secret-id", "third-secret-id"}
	for i, id := range ids {
		if err := c.Update(ctx, "smtpd", id, []byte(strings.Repeat("s", 100+i))); err != nil {
			t.Fatal(err)
		}
	}
	c.TicketKey(ctx, nil)
	sock := []string{"-s", s.Sock}

	out, errOut, code := tlsmgrctlAs(t, nil, append(sock, "stats")...)
	if code != 0 || !regexp.MustCompile(`(?m)^smtpd_cache_entries +3$`).MatchString(out) {
		t.Errorf("stats (%d, %s):\n%s", code, errOut, out)
	}
	out, _, code = tlsmgrctlAs(t, nil, append(sock, "stats", "-json")...)
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("stats -json (%d): %v\n%s", code, err, out)
	}
	if st["smtpd_cache_entries"] != 3.0 || st["tktkey_mode"] != "memory" {
		t.Errorf("stats -json: entries %v, tktkey_mode %v", st["smtpd_cache_entries"], st["tktkey_mode"])
	}
	if keys, ok := st["tktkey_ring_key"].([]any); !ok || len(keys) == 0 {
		t.Errorf("stats -json: tktkey_ring_key = %v, want an array", st["tktkey_ring_key"])
	}

	out, errOut, code = tlsmgrctlAs(t, nil, append(sock, "dump", "smtpd")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || lines[0] != "# smtpd cache: 3 entries, 3 listed" {
		t.Fatalf("dump (%d, %s):\n%s", code, errOut, out)
	}
	entry := regexp.MustCompile(`^[0-9a-f]{16} age=\d+s size=10[0-2]$`)
	for _, l := range lines[1:] {
		if !entry.MatchString(l) {
			t.Errorf("dump line %q", l)
		}
	}
	for _, id := range ids {
		if strings.Contains(out, id) || strings.Contains(out, "secret") {
			t.Errorf("dump shows id %q", id)
		}
	}
	out, _, _ = tlsmgrctlAs(t, nil, append(sock, "dump", "smtpd", "-n", "1")...)
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 2 {
		t.Errorf("dump -n 1 printed %d lines:\n%s", n, out)
	}
	out, _, code = tlsmgrctlAs(t, nil, append(sock, "keys")...)
	if code != 0 || !strings.Contains(out, "source=local") {
		t.Errorf("keys (%d):\n%s", code, out)
	}

	// Another account in the mail owner's group reaches the socket, but
	// may not flush.
	owner, err := user.Lookup(s.Owner)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	if err := os.Chmod(filepath.Dir(s.Sock), 0o750); err != nil {
		t.Fatal(err)
	}
	stranger := &syscall.Credential{Uid: 4242, Gid: uint32(gid)}
	if _, _, code := tlsmgrctlAs(t, stranger, append(sock, "dump", "smtpd")...); code != 0 {
		t.Fatalf("test bug: the other account cannot use the socket (exit %d)", code)
	}
	_, errOut, code = tlsmgrctlAs(t, stranger, append(sock, "flush", "smtpd")...)
	if code != 1 || !strings.Contains(errOut, "only root and the mail owner may flush") || !strings.Contains(errOut, "uid 4242") {
		t.Errorf("flush by uid 4242: exit %d, %q", code, errOut)
	}
	if got := statInt(t, s.stats(t), "smtpd_cache_entries"); got != 3 {
		t.Fatalf("a refused flush removed entries: %d left", got)
	}
	out, errOut, code = tlsmgrctlAs(t, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, append(sock, "flush", "smtpd")...)
	if code != 0 || strings.TrimSpace(out) != "smtpd cache: 3 entries removed" {
		t.Errorf("flush by the mail owner: exit %d, %q %q", code, out, errOut)
	}
	out, _, _ = tlsmgrctlAs(t, nil, append(sock, "dump", "smtpd")...)
	if !strings.HasPrefix(out, "# smtpd cache: 0 entries") {
		t.Errorf("dump after flush:\n%s", out)
	}
	if got := fmt.Sprint(s.stats(t)["requests_flush"]); got != "2" {
		t.Errorf("requests_flush = %s, want 2", got)
	}
}

package master

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func runJailChild(t *testing.T, root string, uid, gid int, chroot, drop bool) jailReport {
	t.Helper()
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	cmd := startChild(t, "jail", "JAIL_ROOT="+root, "JAIL_UID="+strconv.Itoa(uid),
		"JAIL_GID="+strconv.Itoa(gid), "JAIL_CHROOT="+b(chroot), "JAIL_DROP="+b(drop))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jail child: %v", err)
	}
	var r jailReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("jail child output %q: %v", out, err)
	}
	return r
}

func makeJailDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// The dropped process must be able to look inside its root.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func checkDropped(t *testing.T, r jailReport, uid, gid int) {
	t.Helper()
	if r.Uid != uid || r.Euid != uid || r.Gid != gid || r.Egid != gid {
		t.Errorf("uid %d euid %d gid %d egid %d, want uid %d gid %d", r.Uid, r.Euid, r.Gid, r.Egid, uid, gid)
	}
	if !slices.Equal(r.Groups, []int{gid}) {
		t.Errorf("groups %v, want [%d]", r.Groups, gid)
	}
	if len(r.Threads) == 0 {
		t.Error("no thread report")
	}
	for i, th := range r.Threads {
		if th != [3]int{uid, uid, gid} {
			t.Errorf("thread %d runs as uid/euid/gid %v, want %d/%d/%d", i, th, uid, uid, gid)
		}
	}
}

func TestJailChrootAndDrop(t *testing.T) {
	requireRoot(t)
	uid, gid := unprivilegedUser(t)
	dir := makeJailDir(t)
	r := runJailChild(t, dir, uid, gid, true, true)
	if r.Err != "" {
		t.Fatalf("Jail: %s", r.Err)
	}
	if !r.Marker || r.Outside {
		t.Errorf("not inside the jail: /marker visible %v, /etc/passwd visible %v", r.Marker, r.Outside)
	}
	if r.Cwd != "/" {
		t.Errorf("working directory %q, want /", r.Cwd)
	}
	checkDropped(t, r, uid, gid)
}

func TestJailDropOnly(t *testing.T) {
	requireRoot(t)
	uid, gid := unprivilegedUser(t)
	r := runJailChild(t, "", uid, gid, false, true)
	if r.Err != "" {
		t.Fatalf("Jail: %s", r.Err)
	}
	if r.Marker || !r.Outside {
		t.Errorf("changed root without -c: /marker %v, /etc/passwd %v", r.Marker, r.Outside)
	}
	checkDropped(t, r, uid, gid)
	// The kernel's view of every thread: real, effective, saved, fs uid.
	want := "Uid: " + strings.Repeat(strconv.Itoa(uid)+" ", 3) + strconv.Itoa(uid)
	if len(r.ProcStatus) < 2 {
		t.Errorf("only %d tasks seen in /proc", len(r.ProcStatus))
	}
	for _, line := range r.ProcStatus {
		if line != want {
			t.Errorf("task %q, want %q", line, want)
		}
	}
}

func TestJailChrootOnly(t *testing.T) {
	requireRoot(t)
	dir := makeJailDir(t)
	r := runJailChild(t, dir, 0, 0, true, false)
	if r.Err != "" {
		t.Fatalf("Jail: %s", r.Err)
	}
	if !r.Marker || r.Outside || r.Cwd != "/" {
		t.Errorf("marker %v outside %v cwd %q", r.Marker, r.Outside, r.Cwd)
	}
	if r.Euid != 0 {
		t.Errorf("euid %d after chroot only, want 0", r.Euid)
	}
}

// Refusals happen before any change, so they can run in the test process.
func TestJailRefusals(t *testing.T) {
	if err := Jail("", 0, 100, false, true); err == nil || !strings.Contains(err.Error(), "user ID 0") {
		t.Errorf("drop to uid 0: err = %v", err)
	}
	if err := Jail("", 100, 0, false, true); err == nil || !strings.Contains(err.Error(), "group ID 0") {
		t.Errorf("drop to gid 0: err = %v", err)
	}
	if err := Jail(filepath.Join(t.TempDir(), "missing"), 100, 100, true, false); err == nil ||
		!strings.Contains(err.Error(), "chroot") {
		t.Errorf("chroot to a missing directory: err = %v", err)
	}
}

func TestLookupUser(t *testing.T) {
	uid, gid, err := LookupUser("root")
	if err != nil || uid != 0 || gid != 0 {
		t.Errorf("LookupUser(root) = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := LookupUser("no-such-user-xyz"); err == nil || !strings.Contains(err.Error(), "no-such-user-xyz") {
		t.Errorf("unknown user: err = %v", err)
	}
}

func TestAsUser(t *testing.T) {
	requireRoot(t)
	uid, gid := unprivilegedUser(t)
	// Not t.TempDir: its parent is private to root.
	dir, err := os.MkdirTemp("", "asuser")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	groupsBefore, _ := syscall.Getgroups()
	path := filepath.Join(dir, "cache.db")
	err = AsUser(uid, gid, func() error {
		if syscall.Geteuid() != uid || syscall.Getegid() != gid {
			t.Errorf("inside: euid %d egid %d", syscall.Geteuid(), syscall.Getegid())
		}
		return os.WriteFile(path, nil, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("file owned by %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	checkRootRestored(t, groupsBefore)

	// An error from fn is returned, and root is restored all the same.
	sentinel := errors.New("sentinel")
	if err := AsUser(uid, gid, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("AsUser error %v, want sentinel", err)
	}
	checkRootRestored(t, groupsBefore)

	// Not even root can write where the mail owner cannot.
	locked := t.TempDir() // 0700, owned by root
	err = AsUser(uid, gid, func() error {
		return os.WriteFile(filepath.Join(locked, "x"), nil, 0o600)
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("write into root's 0700 directory as mail owner: %v", err)
	}
	checkRootRestored(t, groupsBefore)

	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic in fn not propagated")
			}
		}()
		AsUser(uid, gid, func() error { panic("boom") })
	}()
	checkRootRestored(t, groupsBefore)
}

func checkRootRestored(t *testing.T, groups []int) {
	t.Helper()
	if syscall.Geteuid() != 0 || syscall.Getegid() != 0 {
		t.Fatalf("root not restored: euid %d egid %d", syscall.Geteuid(), syscall.Getegid())
	}
	if now, _ := syscall.Getgroups(); !slices.Equal(now, groups) {
		t.Errorf("groups %v after AsUser, want %v", now, groups)
	}
}

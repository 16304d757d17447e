package safefile_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

func TestOpenRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	f, err := safefile.Open(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("ok"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = safefile.Open(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("reopen an existing file of ours: %v", err)
	}
	f.Close()
}

func TestTruncate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(path, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := safefile.Open(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatalf("O_TRUNC left %d bytes", fi.Size())
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	decoy := filepath.Join(dir, "decoy")
	if err := os.WriteFile(decoy, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A link of root's would be followed (TestRootSymlink).
	symlink := filepath.Join(dir, "symlink")
	safefiletest.PlantLink(t, decoy, symlink)
	hardlink := filepath.Join(dir, "hardlink")
	if err := os.Link(decoy, hardlink); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "subdir")
	if err := os.Mkdir(subdir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, why string
		flag      int
	}{
		{symlink, "symbolic link owned by uid", os.O_RDWR | os.O_CREATE},
		{symlink, "symbolic link owned by uid", os.O_WRONLY | os.O_TRUNC},
		{hardlink, "2 hard links", os.O_RDWR},
		{hardlink, "2 hard links", os.O_WRONLY | os.O_CREATE},
		{hardlink, "2 hard links", os.O_WRONLY | os.O_TRUNC}, // refused before anything is cut
		{fifo, "not a regular file (it is a FIFO)", os.O_RDWR},
		{fifo, "not a regular file (it is a FIFO)", os.O_RDONLY}, // does not wait for a writer
		{subdir, "not a regular file (it is a directory)", os.O_RDONLY},
	} {
		f, err := safefile.Open(tc.path, tc.flag, 0o600)
		if err == nil {
			f.Close()
			t.Errorf("safefile.Open(%s) succeeded", filepath.Base(tc.path))
			continue
		}
		if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("safefile.Open(%s) = %v, want an unsafe-file error saying %q", filepath.Base(tc.path), err, tc.why)
		}
	}
	// For writing only, a FIFO without a reader fails at once (ENXIO)
	// rather than waiting for one.
	if f, err := safefile.Open(fifo, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Error("safefile.Open(fifo, O_WRONLY) succeeded")
	}
	if b, _ := os.ReadFile(decoy); string(b) != "precious" {
		t.Errorf("decoy now holds %q", b)
	}
}

func TestOpenAtRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	safefiletest.PlantLink(t, "/etc/passwd", filepath.Join(dir, "x"))
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirFD)
	if fd, err := safefile.OpenAt(dirFD, "x", unix.O_RDWR|unix.O_CREAT, 0o600); !errors.Is(err, safefile.ErrUnsafe) {
		unix.Close(fd)
		t.Fatalf("OpenAt through a link = %v", err)
	}
}

// Only root can own a symbolic link in the mail owner's directory, so such
// a link is the administrator's: it is followed, and its target is held to
// the same rules.
func TestRootSymlink(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	link := filepath.Join(dir, "cache")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	f, err := safefile.Open(link, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("a link root made: %v", err)
	}
	f.Close()
	// The same link as the account that controls the directory made it.
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := safefile.Open(link, os.O_RDWR, 0); !errors.Is(err, safefile.ErrUnsafe) {
		f.Close()
		t.Fatalf("a link of uid 65534 followed by root: %v", err)
	}
	// A file of another account's is refused, whoever opens it.
	if err := os.Lchown(link, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(target, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := safefile.Open(link, os.O_RDWR, 0); !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), "owned by uid 65534") {
		f.Close()
		t.Fatalf("a file of uid 65534 opened by root: %v", err)
	}
}

// The state-file rule, through the checks every class of files gets.
func TestStateFileClass(t *testing.T) {
	safefiletest.Run(t, safefiletest.Class{
		Make: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("state"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		Use: func(path string) error {
			f, err := safefile.Open(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err == nil {
				f.Close()
			}
			return err
		},
	})
}

// Where root's link leads to another link, that one must be root's too:
// otherwise whoever can write the directory that a relative link points
// into would choose the file.
func TestRootLinkChain(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(sub, "file")
	if err := os.WriteFile(file, []byte("ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	// name -> sub/middle -> file (relative to sub, not to dir)
	if err := os.Symlink("sub/middle", filepath.Join(dir, "name")); err != nil {
		t.Fatal(err)
	}
	middle := filepath.Join(sub, "middle")
	if err := os.Symlink("file", middle); err != nil {
		t.Fatal(err)
	}
	f, err := safefile.Open(filepath.Join(dir, "name"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("a chain of root's links: %v", err)
	}
	b := make([]byte, 4)
	if n, _ := f.Read(b); string(b[:n]) != "ours" {
		t.Errorf("read %q through the chain", b[:n])
	}
	f.Close()

	// The middle link swapped for one of another account's.
	os.Remove(middle)
	safefiletest.PlantLink(t, "file", middle)
	_, err = safefile.Open(filepath.Join(dir, "name"), os.O_RDONLY, 0)
	if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), "refusing to use "+filepath.Join(dir, "name")+": root's symbolic link leads to") ||
		!strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("a chain through a link of uid 65534: %v", err)
	}

	// A loop of root's links ends.
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	if _, err := safefile.Open(loop, os.O_RDONLY, 0); !errors.Is(err, unix.ELOOP) {
		t.Errorf("a loop of links: %v", err)
	}

	// Root's link to a FIFO: refused at once like the FIFO itself.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", filepath.Join(dir, "tofifo")); err != nil {
		t.Fatal(err)
	}
	if _, err := safefile.Open(filepath.Join(dir, "tofifo"), os.O_RDONLY, 0); !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), "it is a FIFO") {
		t.Errorf("root's link to a FIFO: %v", err)
	}
}

// A Rule with owners and forbidden mode bits, as for the Redis settings
// and secrets.
func TestRule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	euid := os.Geteuid()
	secret := safefile.Rule{Owners: []int{0, euid, 4321}, Forbid: 0o077}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		os.Chmod(path, mode)
		f, err := secret.Open(path, os.O_RDONLY, 0)
		if err != nil {
			t.Fatalf("mode %04o: %v", mode, err)
		}
		f.Close()
	}
	who := "root or uid 4321" // root's uid listed twice is named once
	if euid != 0 {
		who = fmt.Sprintf("root or uid %d or uid 4321", euid)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o610} {
		os.Chmod(path, mode)
		_, err := secret.Open(path, os.O_RDONLY, 0)
		want := fmt.Sprintf("refusing to use %s: it is owned by uid %d with mode %04o; it must be owned by %s and give no access to group or others (e.g. mode 0600)", path, euid, mode, who)
		if err == nil || err.Error() != want {
			t.Errorf("mode %04o:\n got %v\nwant %s", mode, err, want)
		}
	}
	os.Chmod(path, 0o664)
	settings := safefile.Rule{Owners: []int{4321}, Forbid: 0o022, Need: "it names secrets"}
	_, err := settings.Open(path, os.O_RDONLY, 0)
	if want := fmt.Sprintf("refusing to use %s: it is owned by uid %d with mode 0664; it names secrets", path, euid); err == nil || err.Error() != want {
		t.Errorf("\n got %v\nwant %s", err, want)
	}
	settings.Need = ""
	_, err = settings.Open(path, os.O_RDONLY, 0)
	if want := "it must be owned by uid 4321 and writable by nobody else"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("got %v, want one ending %q", err, want)
	}
}

package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

func TestOpenRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	f, err := Open(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("ok"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = Open(path, os.O_RDWR, 0)
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
	f, err := Open(path, os.O_WRONLY|os.O_TRUNC, 0)
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
	symlink := filepath.Join(dir, "symlink")
	if err := os.Symlink(decoy, symlink); err != nil {
		t.Fatal(err)
	}
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
		{hardlink, "2 hard links", os.O_RDWR},
		{hardlink, "2 hard links", os.O_WRONLY | os.O_CREATE},
		{hardlink, "2 hard links", os.O_WRONLY | os.O_TRUNC}, // refused before anything is cut
		{fifo, "not a regular file", os.O_RDWR},
		{subdir, "not a regular file", os.O_RDONLY},
	} {
		if os.Geteuid() == 0 && tc.path == symlink {
			// root's own links are followed; see TestRootSymlink.
			continue
		}
		f, err := Open(tc.path, tc.flag, 0o600)
		if err == nil {
			f.Close()
			t.Errorf("Open(%s) succeeded", filepath.Base(tc.path))
			continue
		}
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Open(%s) = %v, want an unsafe-file error saying %q", filepath.Base(tc.path), err, tc.why)
		}
	}
	// For writing only, a FIFO without a reader fails at once (ENXIO)
	// rather than waiting for one.
	if f, err := Open(fifo, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Error("Open(fifo, O_WRONLY) succeeded")
	}
	if b, _ := os.ReadFile(decoy); string(b) != "precious" {
		t.Errorf("decoy now holds %q", b)
	}
}

func TestOpenAtRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "x")); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Root's own links are followed: plant one of another account's.
		if err := os.Lchown(filepath.Join(dir, "x"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirFD)
	if fd, err := OpenAt(dirFD, "x", unix.O_RDWR|unix.O_CREAT, 0o600); !errors.Is(err, ErrUnsafe) {
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
	f, err := Open(link, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("a link root made: %v", err)
	}
	f.Close()
	// The same link as the account that controls the directory made it.
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(link, os.O_RDWR, 0); !errors.Is(err, ErrUnsafe) {
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
	if f, err := Open(link, os.O_RDWR, 0); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "owned by uid 65534") {
		f.Close()
		t.Fatalf("a file of uid 65534 opened by root: %v", err)
	}
}

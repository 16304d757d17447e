// Package safefiletest checks that code opening a class of files goes
// through safefile's rule, by planting at the file's name what an account
// that controls the directory could: a symbolic link of its own, a FIFO,
// a directory; and what only root could: a symbolic link of root's.
package safefiletest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// OtherUID owns the links that PlantLink makes as root: nobody.
const OtherUID = 65534

// PlantLink makes a symbolic link at path to target owned by an account
// other than root, as whoever controls the directory would: as root, it
// is handed to OtherUID; otherwise it is the caller's own.
func PlantLink(t testing.TB, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(path, OtherUID, OtherUID); err != nil {
			t.Fatal(err)
		}
	}
}

// LinkOwner is the owner of the links PlantLink makes.
func LinkOwner() int {
	if os.Geteuid() == 0 {
		return OtherUID
	}
	return os.Geteuid()
}

// Class is one class of files, as its code under test opens them.
type Class struct {
	// Make writes, at path, a file the code accepts (with the contents,
	// owner and mode it needs); nil for code that creates the file
	// itself, which Use then does.
	Make func(t *testing.T, path string)
	// Use has the code open the file at path, as it does in the daemon,
	// and returns the error it reports (nil if it used the file, which it
	// then closes). It runs in a goroutine of its own, so that a test
	// that blocks fails.
	Use func(path string) error
}

// Run checks c in subtests, each in a directory of its own:
//
//   - a symbolic link made by another account than root, to a file the
//     code would accept, is refused with an error that wraps
//     safefile.ErrUnsafe and names the file and the link's owner, and the
//     file it leads to is left as it was;
//   - a symbolic link of root's to such a file is followed and the file
//     used (skipped unless root, or under CI);
//   - a FIFO is refused at once, not waited on;
//   - a directory is refused as not a regular file (or by the kernel,
//     when opened for writing).
func Run(t *testing.T, c Class) {
	if c.Make == nil {
		c.Make = func(t *testing.T, path string) {
			t.Helper()
			if err := c.Use(path); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("foreign symlink", func(t *testing.T) {
		dir := t.TempDir()
		target, path := filepath.Join(dir, "target"), filepath.Join(dir, "name")
		c.Make(t, target)
		before := read(t, target)
		PlantLink(t, target, path)
		err := use(t, c, path)
		wantUnsafe(t, err, path, fmt.Sprintf("symbolic link owned by uid %d", LinkOwner()))
		if after := read(t, target); !bytes.Equal(after, before) {
			t.Errorf("the file a refused link leads to changed")
		}
		if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the planted link is no longer there: %v", err)
		}
	})
	t.Run("root symlink", func(t *testing.T) {
		testenv.NeedRoot(t)
		dir := t.TempDir()
		target, path := filepath.Join(dir, "target"), filepath.Join(dir, "name")
		c.Make(t, target)
		if err := os.Symlink("target", path); err != nil {
			t.Fatal(err)
		}
		if err := use(t, c, path); err != nil {
			t.Errorf("root's link not followed: %v", err)
		}
	})
	t.Run("FIFO", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "name")
		if err := unix.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		wantUnsafe(t, use(t, c, path), path, "not a regular file (it is a FIFO)")
	})
	t.Run("directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "name")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		// Opened for writing, the kernel refuses it first.
		if err := use(t, c, path); !errors.Is(err, unix.EISDIR) {
			wantUnsafe(t, err, path, "not a regular file (it is a directory)")
		}
	})
}

// use runs c.Use, failing the test if it blocks.
func use(t *testing.T, c Class, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Use(path) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("using %s blocked", path)
		return nil
	}
}

func wantUnsafe(t *testing.T, err error, path, why string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s was used", path)
	case !errors.Is(err, safefile.ErrUnsafe):
		t.Errorf("error %q does not wrap safefile.ErrUnsafe", err)
	case !strings.Contains(err.Error(), filepath.Base(path)) || !strings.Contains(err.Error(), why):
		t.Errorf("error %q does not name %s and say %q", err, filepath.Base(path), why)
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

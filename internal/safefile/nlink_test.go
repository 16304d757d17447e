package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A file unlinked between the open and the check (removed, or another
// file renamed over it) has no link left: it is refused as such, not as
// a file of "0 hard links". The race itself cannot be timed from a test,
// so the check is run on a descriptor whose file is then unlinked, as
// OpenAt runs it on the one it just opened.
func TestCheckUnlinkedFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		unlink func(path string) error
	}{
		{"removed", os.Remove},
		{"renamed over", func(path string) error {
			other := filepath.Join(dir, "other")
			if err := os.WriteFile(other, []byte("another file"), 0o600); err != nil {
				return err
			}
			return os.Rename(other, path)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "state")
			if err := os.WriteFile(path, []byte("contents"), 0o600); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := (Rule{}).check(fd, path); err != nil {
				t.Fatalf("before unlinking: %v", err)
			}
			if err := c.unlink(path); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				t.Fatal(err)
			}
			if st.Nlink != 0 {
				t.Skipf("this file system counts %d links for an unlinked open file", st.Nlink)
			}
			err = (Rule{}).check(fd, path)
			var unsafe *UnsafeError
			if !errors.As(err, &unsafe) || !errors.Is(err, ErrUnsafe) {
				t.Fatalf("unlinked file: %v (%T), want an *UnsafeError", err, err)
			}
			if want := "refusing to use " + path + ": it was removed or replaced while being opened"; err.Error() != want {
				t.Errorf("unlinked file:\n got %s\nwant %s", err, want)
			}
		})
	}
}

package keyfile

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"

	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
)

// TestUnknownHeaderWithValidChecksum: a record whose checksum is right
// but whose header this version does not know (a newer format, reserved
// bytes or flags in use) loads as an empty ring with a warning, never as
// keys read under the wrong layout.
func TestUnknownHeaderWithValidChecksum(t *testing.T) {
	path, _, good := savedRing(t)
	for _, c := range []struct {
		what string
		off  int
		val  byte
	}{
		{"version 2", 4, 2},
		{"unknown flag", 5, good[5] | 4},
		{"reserved byte 6", 6, 1},
		{"reserved byte 7", 7, 0x80},
	} {
		t.Run(c.what, func(t *testing.T) {
			b := append([]byte(nil), good...)
			b[c.off] = c.val
			binary.BigEndian.PutUint32(b[sumOff:], crc32.Checksum(b[:sumOff], castagnoli))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			rec := &testlog.Recorder{}
			f := open(t, path, rec)
			wantRing(t, f, tktkey.Ring{})
			if !strings.Contains(rec.String(), "damaged") {
				t.Fatalf("%s: no warning about the record (got %q)", c.what, rec)
			}
		})
	}
}

// TestModeAnyGroupOrOtherAccess: a key file with any group or other
// permission bit, or any other mode than 0600, is made 0600 at Open, with
// a warning.
func TestModeAnyGroupOrOtherAccess(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, mode := range []os.FileMode{0o640, 0o660, 0o620, 0o610, 0o604, 0o602, 0o700} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys")
			open(t, path, nil).Close()
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			rec := &testlog.Recorder{}
			open(t, path, rec).Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file of mode %v reopened: mode %v, want 0600", mode, fi.Mode().Perm())
			}
			if !strings.Contains(rec.String(), "0600") {
				t.Fatalf("key file of mode %v: no warning about the mode (got %q)", mode, rec)
			}
		})
	}
}

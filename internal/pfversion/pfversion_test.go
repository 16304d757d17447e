package pfversion

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in          string
		first       bool
		record      int
		major, snap int
	}{
		{"2.3.0", false, 56, 2, 0},
		{"2.10.1", false, 56, 2, 0},
		{"2.11.0", false, 56, 2, 0},
		{"2.11.0-RC1", false, 56, 2, 0},
		{"2.11-20130825", false, 56, 2, 20130825},
		{"2.12-20140405", false, 56, 2, 20140405},
		{"2.12-20140406", false, 88, 2, 20140406},
		{"3.0.0", false, 88, 3, 0},
		{"3.1.0", false, 88, 3, 0},
		{"3.4.13", false, 88, 3, 0},
		{"3.5.25", false, 88, 3, 0},
		{"3.5-20200610", false, 88, 3, 20200610},
		{"3.6-20200919", false, 88, 3, 20200919},
		{"3.6-20200920", true, 88, 3, 20200920},
		{"3.6-20210101-nonprod", true, 88, 3, 20210101},
		{"3.6.0-RC1", true, 88, 3, 0},
		{"3.6.0", true, 88, 3, 0},
		{"3.7.11", true, 88, 3, 0},
		{"3.10.13", true, 88, 3, 0},
		{"3.12-20260821", true, 88, 3, 20260821},
		{"4.0.0", true, 88, 4, 0},
	} {
		v, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if v.ServerSpeaksFirst() != c.first || v.TicketKeyRecordLen() != c.record ||
			v.Major != c.major || v.Snapshot != c.snap || v.String() != c.in {
			t.Errorf("Parse(%q) = %+v: first %v record %d, want %v %d", c.in, v, v.ServerSpeaksFirst(), v.TicketKeyRecordLen(), c.first, c.record)
		}
	}
	for _, bad := range []string{"", "3", "3.", "3.x.1", "3.5.25.1", "-3.5.1", "+3.5.1", "3.6-2020", "3.6-abcdefgh",
		"3.6", "3..1", "1000.1.1", "3.6-+2020092", strings.Repeat("9", 100)} {
		if v, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, v)
		}
	}
}

// binary writes a file that looks like a program carrying stamp at
// offset off, in pad bytes of filler.
func binary(t *testing.T, stamp string, off, size int) string {
	t.Helper()
	b := bytes.Repeat([]byte{'x', 0, 'y'}, size/3+1)[:size]
	if stamp != "" {
		copy(b[off:], stamp+"\x00")
	}
	path := filepath.Join(t.TempDir(), "smtpd")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStamp(t *testing.T) {
	const block = 256 << 10
	for _, off := range []int{0, 1000, block - 20, block - 5, block + 3, 3*block - 7} {
		path := binary(t, "mail_version=3.5.25", off, 4*block)
		v, err := Stamp(path)
		if err != nil || v.Text != "3.5.25" {
			t.Errorf("stamp at %d: %v, %v", off, v, err)
		}
	}
	if _, err := Stamp(binary(t, "", 0, 3*block)); !errors.Is(err, ErrNoStamp) {
		t.Errorf("no stamp: %v, want ErrNoStamp", err)
	}
	if _, err := Stamp(binary(t, "mail_version=bogus", 10, 1000)); err == nil {
		t.Error("a stamp that is no version was accepted")
	}
	// At the very end, without its NUL: still read.
	path := filepath.Join(t.TempDir(), "end")
	os.WriteFile(path, []byte("....mail_version=3.10.13"), 0o644)
	if v, err := Stamp(path); err != nil || v.Text != "3.10.13" {
		t.Errorf("stamp at the end: %v, %v", v, err)
	}
}

func TestStampRefusesLinksAndFIFOs(t *testing.T) {
	dir := t.TempDir()
	target := binary(t, "mail_version=3.7.11", 5, 100)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Stamp(link); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("a symbolic link was followed: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Stamp(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stamp blocked on a FIFO")
	}
}

func TestQuery(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		`[ "$1 $2 $3 $4" = "-c /cfg -dh mail_version" ] || { echo "postconf: bad args: $*" >&2; exit 1; }` + "\n" +
		`[ "$MAIL_CONFIG" = /cfg ] || { echo "postconf: MAIL_CONFIG=$MAIL_CONFIG" >&2; exit 1; }` + "\n" +
		"echo 3.5.25\n"
	if err := os.WriteFile(filepath.Join(dir, "postconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := Query(context.Background(), dir+"/", "/cfg", nil)
	if err != nil || v.Text != "3.5.25" || v.ServerSpeaksFirst() {
		t.Fatalf("Query = %+v, %v", v, err)
	}
	// A failing postconf's own words reach the error.
	if _, err := Query(context.Background(), dir, "/other", nil); err == nil || !strings.Contains(err.Error(), "bad args") {
		t.Errorf("failing postconf: %v", err)
	}
	if _, err := Query(context.Background(), t.TempDir(), "", nil); err == nil {
		t.Error("no postconf: no error")
	}
	// Endless output is cut, not held.
	os.WriteFile(filepath.Join(dir, "postconf"), []byte("#!/bin/sh\nyes 3.7.11 | head -c 10000000\n"), 0o755)
	if v, err := Query(context.Background(), dir, "", nil); err != nil || v.Text != "3.7.11" {
		t.Errorf("long output: %+v, %v", v, err)
	}
}

// TestInstalledPostfix checks both sources against the host's Postfix,
// where there is one.
func TestInstalledPostfix(t *testing.T) {
	if _, err := exec.LookPath("postconf"); err != nil {
		testenv.Missing(t, "postfix")
	}
	q, err := Query(context.Background(), "/usr/sbin", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("postconf", "-dh", "daemon_directory").Output()
	s, err := Stamp(filepath.Join(strings.TrimSpace(string(out)), "smtpd"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Text != s.Text {
		t.Errorf("postconf says %s, smtpd's stamp %s", q, s)
	}
}

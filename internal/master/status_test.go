package master

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// masterStatus mirrors MASTER_STATUS from master_proto.h.
type masterStatus struct {
	Pid   int32
	Gen   uint32
	Avail int32
}

// statusPair returns a socketpair like the one master(8) makes: the master
// end and the child end.
func statusPair(t *testing.T) (masterEnd, childEnd int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

func openStatus(t *testing.T, fd, pid int, gen string) *Status {
	t.Helper()
	s, err := OpenStatus(fd, pid, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitGone(t *testing.T, s *Status) {
	t.Helper()
	select {
	case <-s.Gone():
	case <-time.After(5 * time.Second):
		t.Fatal("Gone() not closed after the master side went away")
	}
}

func expectNotGone(t *testing.T, s *Status) {
	t.Helper()
	select {
	case <-s.Gone():
		t.Fatal("Gone() closed while the master side is open")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestStatusRecords(t *testing.T) {
	masterEnd, childEnd := statusPair(t)
	defer unix.Close(masterEnd)
	s := openStatus(t, childEnd, 4321, "17")
	if s.Generation() != 0o17 {
		t.Errorf("generation %d, want %d", s.Generation(), 0o17)
	}
	if err := s.Notify(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Notify(true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2*statusRecordLen)
	if _, err := readFull(masterEnd, buf); err != nil {
		t.Fatal(err)
	}
	var recs [2]masterStatus
	if err := binary.Read(bytes.NewReader(buf), binary.NativeEndian, &recs); err != nil {
		t.Fatal(err)
	}
	want := [2]masterStatus{{4321, 0o17, 0}, {4321, 0o17, 1}}
	if recs != want {
		t.Errorf("records %+v, want %+v", recs, want)
	}
	// Our own writes must not look like the master going away.
	expectNotGone(t, s)
}

func TestStatusDefaultPid(t *testing.T) {
	masterEnd, childEnd := statusPair(t)
	defer unix.Close(masterEnd)
	s := openStatus(t, childEnd, 0, "")
	if err := s.Notify(true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, statusRecordLen)
	if _, err := readFull(masterEnd, buf); err != nil {
		t.Fatal(err)
	}
	if pid := int32(binary.NativeEndian.Uint32(buf)); pid != int32(os.Getpid()) {
		t.Errorf("pid %d, want %d", pid, os.Getpid())
	}
	if gen := binary.NativeEndian.Uint32(buf[4:]); gen != 0 {
		t.Errorf("generation %d, want 0", gen)
	}
}

func TestStatusGoneWhenMasterCloses(t *testing.T) {
	masterEnd, childEnd := statusPair(t)
	s := openStatus(t, childEnd, 1, "1")
	expectNotGone(t, s)
	unix.Close(masterEnd)
	waitGone(t, s)
	if err := s.Notify(true); err == nil {
		t.Error("Notify to a vanished master succeeded")
	}
}

// A pipe end sees a hang-up (read end) or an error (write end) when the
// other end closes; both count as the master going away.
func TestStatusGoneOnPipe(t *testing.T) {
	for _, childHoldsWriteEnd := range []bool{true, false} {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		childEnd, masterEnd := p[0], p[1]
		if childHoldsWriteEnd {
			childEnd, masterEnd = p[1], p[0]
		}
		s := openStatus(t, childEnd, 1, "")
		expectNotGone(t, s)
		unix.Close(masterEnd)
		waitGone(t, s)
	}
}

func TestStatusClose(t *testing.T) {
	masterEnd, childEnd := statusPair(t)
	defer unix.Close(masterEnd)
	s, err := OpenStatus(childEnd, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Notify(true); err == nil {
		t.Error("Notify after Close succeeded")
	}
	select {
	case <-s.Gone():
		t.Error("Close reported the master as gone")
	default:
	}
	var st unix.Stat_t
	if unix.Fstat(childEnd, &st) == nil {
		t.Error("status descriptor still open after Close")
	}
}

func TestOpenStatusErrors(t *testing.T) {
	fd := unusedFD(t, 60)
	if _, err := OpenStatus(fd, 1, ""); err == nil {
		t.Errorf("OpenStatus on closed fd %d succeeded", fd)
	}
	masterEnd, childEnd := statusPair(t)
	defer unix.Close(masterEnd)
	defer unix.Close(childEnd)
	if _, err := OpenStatus(childEnd, 1, "12x"); err == nil || !strings.Contains(err.Error(), "12x") {
		t.Errorf("bad generation: err = %v", err)
	}
}

func TestParseGeneration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"17", 15, true},
		{"37777777777", 0xffffffff, true},
		{"40000000000", 0, false},
		{"8", 0, false},
		{"-1", 0, false},
		{" 1", 0, false},
		{"1a", 0, false},
	} {
		got, err := ParseGeneration(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseGeneration(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func readFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, os.ErrClosed
		}
		n += m
	}
	return n, nil
}

// unusedFD returns a descriptor number >= from that is not open.
func unusedFD(t *testing.T, from int) int {
	t.Helper()
	for fd := from; fd < from+100; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == unix.EBADF {
			return fd
		}
	}
	t.Fatalf("no unused descriptor from %d", from)
	return -1
}

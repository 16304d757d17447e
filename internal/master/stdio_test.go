package master

import (
	"bufio"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func isNonblocking(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.O_NONBLOCK != 0
}

func TestStdioConnPipes(t *testing.T) {
	inR, inW := pipe(t)
	outR, outW := pipe(t)
	conn, err := stdioConnFromFDs(inR, outW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(inW, []byte("request")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "request" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if _, err := conn.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	n, err = unix.Read(outR, buf)
	if err != nil || string(buf[:n]) != "reply" {
		t.Fatalf("reply = %q, %v", buf[:n], err)
	}
	// Deadlines work on pipes.
	conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := conn.Read(buf); !os.IsTimeout(err) {
		t.Errorf("Read past deadline: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	// The original descriptors stay open and blocking.
	for _, fd := range []int{inR, outW} {
		if isNonblocking(t, fd) {
			t.Errorf("fd %d left non-blocking", fd)
		}
	}
}

// inetd style: one socket is both stdin and stdout.
func TestStdioConnSocket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	conn, err := stdioConnFromFDs(fds[1], fds[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	unix.Write(fds[0], []byte("ping"))
	buf := make([]byte, 8)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	conn.Write([]byte("pong"))
	n, _ = unix.Read(fds[0], buf)
	if string(buf[:n]) != "pong" {
		t.Errorf("peer read %q", buf[:n])
	}
	if conn.LocalAddr().Network() != "stdio" || conn.RemoteAddr().String() == "" {
		t.Errorf("addresses %v %v", conn.LocalAddr(), conn.RemoteAddr())
	}
}

// StdioConn itself, in a child whose stdin and stdout are pipes.
func TestStdioConnChild(t *testing.T) {
	cmd := startChild(t, "stdio")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "hello\n")
	out := bufio.NewReader(stdout)
	var lines []string
	for {
		line, err := out.ReadString('\n')
		if line != "" {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
		if err != nil {
			break
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	want := []string{"echo: hello", "deadline ok"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("child said %q, want %q", lines, want)
	}
}

func TestStdioConnBadFD(t *testing.T) {
	fd := unusedFD(t, 60)
	if _, err := stdioConnFromFDs(fd, 1); err == nil {
		t.Errorf("closed fd %d accepted as stdin", fd)
	}
}

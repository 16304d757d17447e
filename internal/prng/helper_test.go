package prng

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a helper process (a second program using the
// exchange file) when PRNG_TEST_HELPER is set.
const (
	helperEnv     = "PRNG_TEST_HELPER"
	helperFileEnv = "PRNG_TEST_FILE"
	helperHoldEnv = "PRNG_TEST_HOLD"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "hold-lock":
		helperHoldLock(os.Getenv(helperFileEnv), os.Getenv(helperHoldEnv))
	case "update-loop":
		helperUpdateLoop(os.Getenv(helperFileEnv))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperHoldLock locks the file like another Postfix program would, writes
// its own 1024 bytes under the lock, says "locked", and keeps the lock for
// the given duration ("forever": until killed).
func helperHoldLock(path, hold string) {
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := pwriteFull(fd, helperPattern(), 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("locked")
	if hold == "forever" {
		select {}
	}
	d, _ := time.ParseDuration(hold)
	time.Sleep(d)
	os.Exit(0)
}

func helperPattern() []byte {
	b := make([]byte, ExchangeFileSize)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// helperUpdateLoop updates the exchange file as fast as it can until killed.
func helperUpdateLoop(path string) {
	m, err := testOpen(Options{ExchangeFile: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		m.updateExchange()
	}
}

// startHelper runs the test binary as a helper and returns it with its
// standard output.
func startHelper(t *testing.T, mode, path string, extraEnv ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a race-enabled child otherwise lingers a second at exit,
	// still holding its locks.
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperFileEnv+"="+path, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("helper said %q, %v; want %q", line, err, want)
	}
}

// fakeClock hands every timer request to the test, which fires it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	d time.Duration
	c chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 11, 20, 23, 51, 51, 0, time.UTC), waits: make(chan fakeWait, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, c: make(chan time.Time, 1)}
	c.waits <- w
	return w.c
}

// next returns the next timer request.
func (c *fakeClock) next(t *testing.T) fakeWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(5 * time.Second):
		t.Fatal("no timer was requested")
		return fakeWait{}
	}
}

// fire advances the clock by the timer's duration and fires it.
func (c *fakeClock) fire(w fakeWait) {
	c.mu.Lock()
	c.now = c.now.Add(w.d)
	now := c.now
	c.mu.Unlock()
	w.c <- now
}

// countingReader is a deterministic stand-in for crypto/rand.
type countingReader struct{ next byte }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.next
		r.next++
	}
	return len(p), nil
}

var _ io.Reader = (*countingReader)(nil)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func poolBytes(t *testing.T, p Pool, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if k, err := p.Read(b); k != n || err != nil {
		t.Fatalf("Read = %d, %v", k, err)
	}
	return b
}

package prng

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// egdServer is a test EGD server. Its mode applies to each request as it
// arrives.
type egdServer struct {
	path     string
	mode     atomic.Int32
	requests atomic.Int32
	lastSize atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

const (
	egdNormal   = iota // answers k = n, then n random bytes
	egdZero            // answers k = 0
	egdHang            // never answers
	egdConstant        // answers k = n, then n times 0xa5: a dead source
)

func startEGD(t *testing.T, mode int32) *egdServer {
	t.Helper()
	s := &egdServer{path: filepath.Join(t.TempDir(), "egd.sock")}
	s.mode.Store(mode)
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			go s.serve(conn)
		}
	}()
	return s
}

func (s *egdServer) serve(conn net.Conn) {
	defer conn.Close()
	var req [2]byte
	for {
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			return
		}
		if req[0] != 0x01 {
			return
		}
		s.requests.Add(1)
		s.lastSize.Store(int32(req[1]))
		switch s.mode.Load() {
		case egdNormal:
			reply := make([]byte, 1+int(req[1]))
			reply[0] = req[1]
			rand.Read(reply[1:])
			conn.Write(reply)
		case egdConstant:
			conn.Write(append([]byte{req[1]}, bytes.Repeat([]byte{0xa5}, int(req[1]))...))
		case egdZero:
			conn.Write([]byte{0})
		case egdHang:
			io.Copy(io.Discard, conn) // until the client gives up
			return
		}
	}
}

func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		m.Close()
	})
}

func TestEGDSource(t *testing.T) {
	s := startEGD(t, egdNormal)
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "egd:" + s.path, Bytes: 1000, Logger: log.Logger(), ReseedPeriod: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if s.requests.Load() != 1 {
		t.Fatalf("%d requests at Open, want 1", s.requests.Load())
	}
	if s.lastSize.Load() != 255 {
		t.Fatalf("asked for %d bytes, want the EGD cap 255", s.lastSize.Load())
	}
	st := m.Stats()
	if !st.SourceOK || st.LastReseed.IsZero() || st.ReseedFailures != 0 || st.Source != "egd:"+s.path {
		t.Fatalf("stats after Open: %+v", st)
	}
	runManager(t, m)
	deadline := time.Now().Add(5 * time.Second)
	for s.requests.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests; the reseed timer does not run", s.requests.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.mu.Lock()
	conns := len(s.conns)
	s.mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections; the connection should stay open", conns)
	}
	if len(log.Lines()) != 0 {
		t.Fatalf("unexpected log lines: %q", log.Lines())
	}
}

func TestEGDZeroBytesIsAFailure(t *testing.T) {
	s := startEGD(t, egdZero)
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "egd:" + s.path, Logger: log.Logger(), RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if log.Count("", "cannot read from EGD server "+s.path+": server reports zero bytes available") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	if st := m.Stats(); st.SourceOK || st.ReseedFailures != 1 || !st.LastReseed.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
	poolBytes(t, m.Pool(), 32)

	// When the server has entropy again, the retry reconnects and logs it.
	s.mode.Store(egdNormal)
	runManager(t, m)
	log.WaitFor(t, "entropy source egd:"+s.path+" is working again")
	if st := m.Stats(); !st.SourceOK || st.LastReseed.IsZero() {
		t.Fatalf("stats after recovery: %+v", st)
	}
}

func TestEGDHangingServerTimesOut(t *testing.T) {
	s := startEGD(t, egdHang)
	log := &testlog.Recorder{}
	start := time.Now()
	m, err := testOpen(Options{Source: "egd:" + s.path, Logger: log.Logger(), ReadTimeout: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Open took %v with a hanging EGD server", elapsed)
	}
	if log.Count("", "cannot read from EGD server") != 1 || log.Count("", "i/o timeout") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	poolBytes(t, m.Pool(), 255) // the pool serves meanwhile

	s.mode.Store(egdNormal)
	runManager(t, m)
	log.WaitFor(t, "is working again")
}

func TestEGDUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egd.sock")
	_, err := testOpen(Options{Source: "egd:" + path})
	if err == nil || err.Error() != "open tls_random_source egd:"+path+": no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}

	// SourceOptional: start anyway, warn, and connect once the server is up.
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "egd:" + path, SourceOptional: true, Logger: log.Logger(), RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if log.Count("", "cannot connect to EGD server "+path+": no such file or directory") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	runManager(t, m)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		var req [2]byte
		for {
			if _, err := io.ReadFull(conn, req[:]); err != nil {
				return
			}
			reply := make([]byte, 1+int(req[1]))
			reply[0] = req[1]
			rand.Read(reply[1:])
			conn.Write(reply)
		}
	}()
	log.WaitFor(t, "is working again")
}

func TestDevSource(t *testing.T) {
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "dev:/dev/urandom", Bytes: 64, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := m.Stats(); !st.SourceOK || st.LastReseed.IsZero() || st.ReseedFailures != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if m.readBytes != 64 {
		t.Fatalf("read size %d", m.readBytes)
	}
	if len(log.Lines()) != 0 {
		t.Fatalf("log: %q", log.Lines())
	}
	m2, err := testOpen(Options{Source: "dev:/dev/urandom", Bytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if m2.readBytes != 255 {
		t.Fatalf("device read size %d, want Postfix's cap 255", m2.readBytes)
	}
}

// TestDevSourceWithoutPoller reads a "device" the runtime poller cannot
// watch (a regular file), which takes the goroutine-with-timeout path.
func TestDevSourceWithoutPoller(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regular")
	os.WriteFile(path, bytes.Repeat([]byte{7}, 100), 0o600)
	src, err := openSource(sourceDev, path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	if err := src.(*fileSource).f.SetReadDeadline(time.Now()); !errors.Is(err, os.ErrNoDeadline) {
		t.Fatalf("SetReadDeadline on a regular file: %v; the test needs a file without deadlines", err)
	}
	data, err := src.read(32)
	if err != nil || !bytes.Equal(data, bytes.Repeat([]byte{7}, 32)) {
		t.Fatalf("read = %x, %v", data, err)
	}
}

func TestDevSourceMissing(t *testing.T) {
	_, err := testOpen(Options{Source: "dev:/dev/nosuch"})
	if err == nil || err.Error() != "open tls_random_source dev:/dev/nosuch: no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}
}

// TestDevSourceBlockingTimesOut uses a FIFO with a writer that writes
// nothing: a read would block forever.
func TestDevSourceBlockingTimesOut(t *testing.T) {
	fifo, writer := fifoSource(t)
	log := &testlog.Recorder{}
	start := time.Now()
	m, err := testOpen(Options{Source: "dev:" + fifo, Logger: log.Logger(), ReadTimeout: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Open took %v on a blocking device", elapsed)
	}
	if log.Count("", "cannot read from entropy device "+fifo+": i/o timeout") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	poolBytes(t, m.Pool(), 32)

	// Data arrives: the reopened device is read and recovery is logged.
	runManager(t, m)
	writer.Write(randomBytes(64))
	log.WaitFor(t, "entropy source dev:"+fifo+" is working again")
}

func TestPlainFileReadOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed")
	if err := os.WriteFile(path, randomBytes(400), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: path, Bytes: 300, Logger: log.Logger(), ReseedPeriod: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if m.src != nil {
		t.Fatal("a plain file must be dropped after the first read")
	}
	st := m.Stats()
	if !st.SourceOK || st.LastReseed.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
	// Later reseeds do not touch the file again.
	os.Remove(path)
	runManager(t, m)
	time.Sleep(100 * time.Millisecond)
	if st2 := m.Stats(); st2.ReseedFailures != 0 || !st2.LastReseed.Equal(st.LastReseed) {
		t.Fatalf("stats after reseed events: %+v", st2)
	}
	if len(log.Lines()) != 0 {
		t.Fatalf("log: %q", log.Lines())
	}
}

func TestPlainFileFeedsThePool(t *testing.T) {
	dir := t.TempDir()
	output := func(content string, bytes int) []byte {
		path := filepath.Join(dir, "seed")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := testOpen(Options{Source: path, Bytes: bytes, Clock: newFakeClock(), osEntropy: &countingReader{}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return poolBytes(t, m.Pool(), 32)
	}
	base := output("0123456789", 5)
	if !bytes.Equal(base, output("0123456789", 5)) {
		t.Fatal("same inputs, different output: something unaccounted feeds the pool")
	}
	if bytes.Equal(base, output("0123X56789", 5)) {
		t.Fatal("the file's content does not reach the pool")
	}
	if !bytes.Equal(base, output("01234X6789", 5)) {
		t.Fatal("more than tls_random_bytes bytes were read")
	}
}

func TestPlainFileProblems(t *testing.T) {
	_, err := testOpen(Options{Source: "/nonexistent/seed"})
	if err == nil || err.Error() != "open tls_random_source /nonexistent/seed: no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "/nonexistent/seed", SourceOptional: true, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if log.Count("warn", "cannot open entropy file /nonexistent/seed: no such file or directory") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	log = &testlog.Recorder{}
	m, err = testOpen(Options{Source: empty, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if log.Count("", "cannot read from entropy file "+empty+": file is empty") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	if st := m.Stats(); st.SourceOK || st.ReseedFailures != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestEmptySourceWarning(t *testing.T) {
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []string{
		"warning: no entropy source specified with parameter tls_random_source",
		"warning: encryption keys etc. may be predictable",
	}
	if got := log.String(); got != strings.Join(want, "\n") {
		t.Fatalf("log: %q, want %q", got, want)
	}
	poolBytes(t, m.Pool(), 32)
}

// checkDeadSource opens three managers on a source that fails the health
// tests and reseeds each reseeds more times. Their OS generator gives the
// same 48 bytes for instantiation, then the first and third the same
// bytes and the second different ones; clock, pid and source bytes are
// the same. Each must warn once, report the source as failing, count the
// reads it did not credit (all but credited) and keep serving; the
// outputs must differ exactly where the reseeds' OS bytes do.
func checkDeadSource(t *testing.T, source string, size, reseeds int, credited uint64, test string) {
	t.Helper()
	instantiation := randomBytes(48)
	var outputs [][]byte
	for _, next := range []byte{1, 101, 1} {
		log := &testlog.Recorder{}
		m, err := testOpen(Options{
			Source: source, Bytes: size, Logger: log.Logger(), Clock: newFakeClock(),
			osEntropy: io.MultiReader(bytes.NewReader(instantiation), &countingReader{next: next}),
		})
		if err != nil {
			t.Fatal(err)
		}
		for range reseeds {
			m.reseedEvent()
		}
		st := m.Stats()
		if st.SourceOK || st.HealthFailures != uint64(reseeds+1)-credited || st.ReseedFailures != 0 || st.OSEntropyFailures != 0 {
			t.Fatalf("stats after %d reads: %+v", reseeds+1, st)
		}
		if credited == 0 && !st.LastReseed.IsZero() {
			t.Fatalf("LastReseed %v: a dead source's bytes were counted as a reseed", st.LastReseed)
		}
		want := "entropy source " + source + " fails the " + test + " health test: its bytes are not counted as entropy"
		if lines := log.Lines(); len(lines) != 1 || lines[0].Level != "warn" || !strings.HasPrefix(lines[0].Text, want) {
			t.Fatalf("log %q, want one warning starting %q", lines, want)
		}
		seed := poolBytes(t, m.Pool(), 32)
		if bytes.Equal(seed, poolBytes(t, m.Pool(), 32)) {
			t.Fatal("the pool repeats itself")
		}
		outputs = append(outputs, seed)
		m.Close()
	}
	if !bytes.Equal(outputs[0], outputs[2]) {
		t.Fatal("identical inputs, different outputs: the comparison below would prove nothing")
	}
	if bytes.Equal(outputs[0], outputs[1]) {
		t.Fatal("two managers given the same dead source produce the same bytes: the OS generator is not mixed in")
	}
}

func TestDeadSourceDevZero(t *testing.T) {
	checkDeadSource(t, "dev:/dev/zero", 0, 10, 0, rctName)
}

// TestDeadSourceZeroFile: a regular file of zeros behind dev:, read 255
// bytes at a time.
func TestDeadSourceZeroFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	checkDeadSource(t, "dev:"+path, 255, 10, 0, rctName)
}

// TestDeadSourceRepeatingFIFO: a device that replays one random 255-byte
// block. The first read cannot know and is credited; the second is caught.
func TestDeadSourceRepeatingFIFO(t *testing.T) {
	fifo, writer := fifoSource(t)
	// 3 managers x 11 reads x 255 bytes, within the pipe's 64 KiB.
	if _, err := writer.Write(bytes.Repeat(randomBytes(255), 40)); err != nil {
		t.Fatal(err)
	}
	checkDeadSource(t, "dev:"+fifo, 255, 10, 1, patternName)
}

func TestDeadSourceEGDConstant(t *testing.T) {
	s := startEGD(t, egdConstant)
	checkDeadSource(t, "egd:"+s.path, 255, 10, 0, rctName)
}

func TestDeadSourcePlainFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed")
	if err := os.WriteFile(path, make([]byte, 64), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: path, Bytes: 64, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for range 3 {
		m.reseedEvent() // the file is not read again; the OS generator is
	}
	if st := m.Stats(); st.SourceOK || st.HealthFailures != 1 || !st.LastReseed.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
	want := testlog.Line{Level: "warn", Text: "entropy file " + path + " fails the repetition count health test: its bytes are not counted as entropy"}
	if lines := log.Lines(); len(lines) != 1 || lines[0] != want {
		t.Fatalf("log %q, want %q", lines, want)
	}
	poolBytes(t, m.Pool(), 32)
}

// TestHealthySourceManyReseeds: /dev/urandom through 400 reseeds of 255
// bytes (about 200 APT windows) never trips the tests.
func TestHealthySourceManyReseeds(t *testing.T) {
	log := &testlog.Recorder{}
	clock := newFakeClock()
	m, err := testOpen(Options{Source: "dev:/dev/urandom", Bytes: 255, Logger: log.Logger(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for range 400 {
		m.reseedEvent()
	}
	if st := m.Stats(); !st.SourceOK || st.HealthFailures != 0 || st.ReseedFailures != 0 || !st.LastReseed.Equal(clock.Now()) {
		t.Fatalf("stats: %+v", st)
	}
	if m.health.n != 401*255 {
		t.Fatalf("%d samples tested, want %d", m.health.n, 401*255)
	}
	if len(log.Lines()) != 0 {
		t.Fatalf("log: %q", log.Lines())
	}
}

// TestSourceRecoversFromHealthFailure: an EGD server that returned
// constant bytes and then random ones is trusted again once a full APT
// window has passed, with one line each way.
func TestSourceRecoversFromHealthFailure(t *testing.T) {
	s := startEGD(t, egdConstant)
	log := &testlog.Recorder{}
	clock := newFakeClock()
	m, err := testOpen(Options{Source: "egd:" + s.path, Bytes: 255, Logger: log.Logger(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s.mode.Store(egdNormal)
	reads := 0
	for m.health.failing && reads < 10 {
		m.reseedEvent()
		reads++
	}
	// 512 clean bytes take two or three reads of 255, depending on how
	// many clean bytes the last constant read ended with.
	if reads < 2 || reads > 3 {
		t.Fatalf("healthy again after %d random reads", reads)
	}
	if st := m.Stats(); st.SourceOK || st.HealthFailures != uint64(1+reads) || !st.LastReseed.IsZero() {
		t.Fatalf("stats when the window completes: %+v", st)
	}
	m.reseedEvent()
	if st := m.Stats(); !st.SourceOK || st.HealthFailures != uint64(1+reads) || !st.LastReseed.Equal(clock.Now()) {
		t.Fatalf("stats after the next read: %+v", st)
	}
	want := []testlog.Line{
		{Level: "warn", Text: "entropy source egd:" + s.path + " fails the repetition count health test"},
		{Level: "info", Text: "entropy source egd:" + s.path + " passes the health tests again"},
	}
	lines := log.Lines()
	if len(lines) != 2 || lines[0].Level != want[0].Level || !strings.HasPrefix(lines[0].Text, want[0].Text) || lines[1] != want[1] {
		t.Fatalf("log %q, want %q", lines, want)
	}
}

// TestFailingSourceReadAgainAfterIOError: a source that fails its health
// tests, then its reads, then answers constant bytes again: the health
// warning is not repeated, and the reconnect says the source still fails.
func TestFailingSourceReadAgainAfterIOError(t *testing.T) {
	s := startEGD(t, egdConstant)
	log := &testlog.Recorder{}
	m, err := testOpen(Options{Source: "egd:" + s.path, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s.mode.Store(egdZero)
	m.reseedEvent()
	s.mode.Store(egdConstant)
	m.reseedEvent()
	m.reseedEvent()
	if st := m.Stats(); st.SourceOK || st.HealthFailures != 3 || st.ReseedFailures != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if n := log.Count("", " fails the "); n != 1 {
		t.Fatalf("%d health warnings; log %q", n, log.Lines())
	}
	if n := log.Count("info", "entropy source egd:"+s.path+" can be read again, but still fails its health tests"); n != 1 {
		t.Fatalf("log %q", log.Lines())
	}
	if log.Count("", "working again") != 0 {
		t.Fatalf("log %q", log.Lines())
	}
}

// TestOSEntropyFailure: a failing OS generator makes Open fail, or, at a
// reseed, is counted and logged while the pool keeps serving.
func TestOSEntropyFailure(t *testing.T) {
	_, err := testOpen(Options{Source: "dev:/dev/urandom", osEntropy: failingReader{}})
	if err == nil || err.Error() != "cannot read operating system randomness: getrandom: broken" {
		t.Fatalf("Open error: %v", err)
	}
	for _, c := range []struct {
		source, want string
		ok           bool
	}{
		{"dev:/dev/urandom", "cannot read operating system randomness: getrandom: broken -- this reseed uses tls_random_source alone", true},
		{"dev:/dev/zero", "cannot read operating system randomness: getrandom: broken -- this reseed adds no entropy; the pool keeps serving from its current state", false},
		{"", "cannot read operating system randomness: getrandom: broken -- this reseed adds no entropy; the pool keeps serving from its current state", false},
	} {
		log := &testlog.Recorder{}
		// Enough for instantiation only.
		osEntropy := io.MultiReader(bytes.NewReader(randomBytes(48)), failingReader{})
		m, err := testOpen(Options{Source: c.source, Logger: log.Logger(), osEntropy: osEntropy})
		if err != nil {
			t.Fatal(err)
		}
		if c.source == "" {
			m.reseedEvent()
		}
		st := m.Stats()
		if st.OSEntropyFailures != 1 || st.SourceOK != c.ok {
			t.Fatalf("%q: stats %+v", c.source, st)
		}
		if log.Count("warn", c.want) != 1 {
			t.Fatalf("%q: log %q, want the warning %q", c.source, log.Lines(), c.want)
		}
		poolBytes(t, m.Pool(), 32)
		m.Close()
	}
}

// fifoSource makes a FIFO with a writer end held open (closed when the
// test ends), so that a source reading it waits rather than seeing EOF.
func fifoSource(t *testing.T) (string, *os.File) {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	writer, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	return fifo, writer
}

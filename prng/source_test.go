package prng

import (
	"bytes"
	"context"
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
	egdNormal = iota // answers k = n, then n bytes
	egdZero          // answers k = 0
	egdHang          // never answers
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
			reply := append([]byte{req[1]}, bytes.Repeat([]byte{0xa5}, int(req[1]))...)
			conn.Write(reply)
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
	log := &testLogger{}
	m, err := Open(Options{Source: "egd:" + s.path, Bytes: 1000, Logger: log, ReseedPeriod: 10 * time.Millisecond})
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
	if len(log.all()) != 0 {
		t.Fatalf("unexpected log lines: %q", log.all())
	}
}

func TestEGDZeroBytesIsAFailure(t *testing.T) {
	s := startEGD(t, egdZero)
	log := &testLogger{}
	m, err := Open(Options{Source: "egd:" + s.path, Logger: log, RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if log.count("cannot read from EGD server "+s.path+": server reports zero bytes available") != 1 {
		t.Fatalf("log: %q", log.all())
	}
	if st := m.Stats(); st.SourceOK || st.ReseedFailures != 1 || !st.LastReseed.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
	poolBytes(t, m.Pool(), 32)

	// When the server has entropy again, the retry reconnects and logs it.
	s.mode.Store(egdNormal)
	runManager(t, m)
	log.waitFor(t, "entropy source egd:"+s.path+" is working again", 5*time.Second)
	if st := m.Stats(); !st.SourceOK || st.LastReseed.IsZero() {
		t.Fatalf("stats after recovery: %+v", st)
	}
}

func TestEGDHangingServerTimesOut(t *testing.T) {
	s := startEGD(t, egdHang)
	log := &testLogger{}
	start := time.Now()
	m, err := Open(Options{Source: "egd:" + s.path, Logger: log, ReadTimeout: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Open took %v with a hanging EGD server", elapsed)
	}
	if log.count("cannot read from EGD server") != 1 || log.count("i/o timeout") != 1 {
		t.Fatalf("log: %q", log.all())
	}
	poolBytes(t, m.Pool(), 255) // the pool serves meanwhile

	s.mode.Store(egdNormal)
	runManager(t, m)
	log.waitFor(t, "is working again", 5*time.Second)
}

func TestEGDUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egd.sock")
	_, err := Open(Options{Source: "egd:" + path})
	if err == nil || err.Error() != "open tls_random_source egd:"+path+": no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}

	// SourceOptional: start anyway, warn, and connect once the server is up.
	log := &testLogger{}
	m, err := Open(Options{Source: "egd:" + path, SourceOptional: true, Logger: log, RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if log.count("cannot connect to EGD server "+path+": no such file or directory") != 1 {
		t.Fatalf("log: %q", log.all())
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
			conn.Write(append([]byte{req[1]}, make([]byte, req[1])...))
		}
	}()
	log.waitFor(t, "is working again", 5*time.Second)
}

func TestDevSource(t *testing.T) {
	log := &testLogger{}
	m, err := Open(Options{Source: "dev:/dev/urandom", Bytes: 64, Logger: log})
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
	if len(log.all()) != 0 {
		t.Fatalf("log: %q", log.all())
	}
	m2, err := Open(Options{Source: "dev:/dev/urandom", Bytes: 4096})
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
	_, err := Open(Options{Source: "dev:/dev/nosuch"})
	if err == nil || err.Error() != "open tls_random_source dev:/dev/nosuch: no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}
}

// TestDevSourceBlockingTimesOut uses a FIFO with a writer that writes
// nothing: a read would block forever.
func TestDevSourceBlockingTimesOut(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	writer, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	log := &testLogger{}
	start := time.Now()
	m, err := Open(Options{Source: "dev:" + fifo, Logger: log, ReadTimeout: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Open took %v on a blocking device", elapsed)
	}
	if log.count("cannot read from entropy device "+fifo+": i/o timeout") != 1 {
		t.Fatalf("log: %q", log.all())
	}
	poolBytes(t, m.Pool(), 32)

	// Data arrives: the reopened device is read and recovery is logged.
	runManager(t, m)
	writer.Write(bytes.Repeat([]byte{1}, 64))
	log.waitFor(t, "entropy source dev:"+fifo+" is working again", 5*time.Second)
}

func TestPlainFileReadOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed")
	if err := os.WriteFile(path, bytes.Repeat([]byte("seed"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &testLogger{}
	m, err := Open(Options{Source: path, Bytes: 300, Logger: log, ReseedPeriod: 5 * time.Millisecond})
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
	if len(log.all()) != 0 {
		t.Fatalf("log: %q", log.all())
	}
}

func TestPlainFileFeedsThePool(t *testing.T) {
	dir := t.TempDir()
	output := func(content string, bytes int) []byte {
		path := filepath.Join(dir, "seed")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := Open(Options{Source: path, Bytes: bytes, Clock: newFakeClock(), osEntropy: &countingReader{}})
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
	_, err := Open(Options{Source: "/nonexistent/seed"})
	if err == nil || err.Error() != "open tls_random_source /nonexistent/seed: no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}
	log := &testLogger{}
	m, err := Open(Options{Source: "/nonexistent/seed", SourceOptional: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if log.count("warning: cannot open entropy file /nonexistent/seed: no such file or directory") != 1 {
		t.Fatalf("log: %q", log.all())
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	log = &testLogger{}
	m, err = Open(Options{Source: empty, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if log.count("cannot read from entropy file "+empty+": file is empty") != 1 {
		t.Fatalf("log: %q", log.all())
	}
	if st := m.Stats(); st.SourceOK || st.ReseedFailures != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestEmptySourceWarning(t *testing.T) {
	log := &testLogger{}
	m, err := Open(Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []string{
		"warning: no entropy source specified with parameter tls_random_source",
		"warning: encryption keys etc. may be predictable",
	}
	if got := log.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log: %q, want %q", got, want)
	}
	poolBytes(t, m.Pool(), 32)
}

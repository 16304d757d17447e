package prng

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// sourceKind is the type of tls_random_source, encoded in its prefix.
type sourceKind int

const (
	sourceNone sourceKind = iota // empty parameter
	sourceDev                    // dev:PATH, a device read at every reseed
	sourceEGD                    // egd:PATH, an EGD server on a UNIX stream socket
	sourceFile                   // any other value: a plain file read once
)

const (
	devPrefix = "dev:"
	egdPrefix = "egd:"
	// maxDeviceRead is Postfix's cap for one read from a device or EGD
	// server (the EGD protocol counts bytes in one octet).
	maxDeviceRead = 255
)

func parseSource(s string) (sourceKind, string) {
	switch {
	case s == "":
		return sourceNone, ""
	case strings.HasPrefix(s, devPrefix):
		return sourceDev, s[len(devPrefix):]
	case strings.HasPrefix(s, egdPrefix):
		return sourceEGD, s[len(egdPrefix):]
	default:
		return sourceFile, s
	}
}

// entropySource is an opened tls_random_source.
type entropySource interface {
	// read returns up to n bytes (at least one) or an error, within the
	// source's timeout.
	read(n int) ([]byte, error)
	// close releases the descriptor; it may be called while a read is
	// blocked and then makes that read fail.
	close() error
}

func openSource(kind sourceKind, path string, timeout time.Duration) (entropySource, error) {
	switch kind {
	case sourceDev, sourceFile:
		// O_NONBLOCK: opening a FIFO must not wait for a writer, and a
		// device that has nothing to give must not block a read past
		// its deadline.
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		return &fileSource{f: f, timeout: timeout, readAll: kind == sourceFile}, nil
	case sourceEGD:
		conn, err := net.DialTimeout("unix", path, timeout)
		if err != nil {
			return nil, err
		}
		return &egdSource{conn: conn, timeout: timeout}, nil
	}
	return nil, errors.New("no entropy source")
}

// fileSource is a device (dev:) or a plain file.
type fileSource struct {
	f       *os.File
	timeout time.Duration
	// readAll: a plain file is read until n bytes or end of file; a
	// device gives what one read returns, as Postfix does.
	readAll bool
}

func (s *fileSource) read(n int) ([]byte, error) {
	buf := make([]byte, n)
	deadline := time.Now().Add(s.timeout)
	got := 0
	for got < n {
		k, err := readBefore(s.f, buf[got:], deadline)
		got += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if !s.readAll {
			break
		}
	}
	if got == 0 {
		return nil, io.EOF
	}
	return buf[:got], nil
}

func (s *fileSource) close() error { return s.f.Close() }

// readBefore reads once from f, giving up at deadline. Descriptors that the
// runtime poller handles use a read deadline. Others (a device without
// poll support) are read in a goroutine that is abandoned on timeout: the
// descriptor is non-blocking, so that goroutine cannot stay stuck for long,
// and it reads into its own buffer.
func readBefore(f *os.File, p []byte, deadline time.Time) (int, error) {
	if err := f.SetReadDeadline(deadline); err == nil {
		return f.Read(p)
	} else if !errors.Is(err, os.ErrNoDeadline) {
		return 0, err
	}
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func(size int) {
		tmp := make([]byte, size)
		k, err := f.Read(tmp)
		done <- result{tmp[:k], err}
	}(len(p))
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-done:
		return copy(p, r.data), r.err
	case <-timer.C:
		return 0, os.ErrDeadlineExceeded
	}
}

// egdSource is a connection to an EGD (Entropy Gathering Daemon) server.
type egdSource struct {
	conn    net.Conn
	timeout time.Duration
}

var errEGDEmpty = errors.New("server reports zero bytes available")

// read sends the non-blocking read command (0x01, n), reads the count k
// the server has available, then k bytes.
func (s *egdSource) read(n int) ([]byte, error) {
	n = min(n, maxDeviceRead)
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write([]byte{0x01, byte(n)}); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	var count [1]byte
	if _, err := io.ReadFull(s.conn, count[:]); err != nil {
		return nil, fmt.Errorf("read count: %w", err)
	}
	if count[0] == 0 {
		return nil, errEGDEmpty
	}
	buf := make([]byte, count[0])
	if _, err := io.ReadFull(s.conn, buf); err != nil {
		return nil, fmt.Errorf("read %d bytes: %w", count[0], err)
	}
	return buf, nil
}

func (s *egdSource) close() error { return s.conn.Close() }

// errorCause strips the operation and path that os and net put around a
// system error, for messages that already name the file.
func errorCause(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

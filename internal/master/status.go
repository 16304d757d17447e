package master

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Descriptors a Postfix daemon inherits from master(8).
const (
	FlowReadFD  = 3 // flow-control pipe, read end
	FlowWriteFD = 4 // flow-control pipe, write end
	StatusFD    = 5 // status channel to master
	ListenFD    = 6 // first listening socket
)

// GenerationEnv is the environment variable in which master(8) passes the
// process generation, in octal.
const GenerationEnv = "GENERATION"

// Values of the avail field of a status record.
const (
	statTaken = 0 // busy with a client
	statAvail = 1 // idle
)

// statusRecordLen is the size of {int pid; unsigned gen; int avail}.
const statusRecordLen = 12

// Status is the child end of the status channel to master(8).
//
// master(8) creates the channel as a socketpair and keeps its own end open;
// it never writes to it. So the child's end becomes readable (end of file,
// or hang-up/error) only when the master has gone away or dropped the
// service, e.g. on "postfix reload": Gone reports that.
type Status struct {
	fd   int
	pid  int32
	gen  uint32
	gone chan struct{}

	writeMu sync.Mutex

	closeOnce sync.Once
	cancelR   int // wakes the watcher when Close is called
	cancelW   int
	watcher   chan struct{} // closed when the watcher has returned
}

// ParseGeneration decodes the GENERATION environment value (octal digits);
// an empty value means generation 0, as when no master started us.
func ParseGeneration(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad generation: %s", s)
		}
	}
	g, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("bad generation: %s", s)
	}
	return uint32(g), nil
}

// OpenStatus takes over the status channel on fd (normally StatusFD). pid is
// reported in every record (0 means os.Getpid()); generationEnv is the
// GENERATION environment value. The descriptor is marked close-on-exec and
// watched for the master going away.
func OpenStatus(fd int, pid int, generationEnv string) (*Status, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("status channel fd %d: %w", fd, err)
	}
	gen, err := ParseGeneration(generationEnv)
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		pid = os.Getpid()
	}
	var cancel [2]int
	if err := unix.Pipe2(cancel[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("status channel: pipe: %w", err)
	}
	unix.CloseOnExec(fd)
	s := &Status{
		fd:      fd,
		pid:     int32(pid),
		gen:     gen,
		gone:    make(chan struct{}),
		cancelR: cancel[0],
		cancelW: cancel[1],
		watcher: make(chan struct{}),
	}
	// Poll the descriptor itself rather than handing it to the Go poller:
	// that would set O_NONBLOCK on an open file description the master
	// and sibling processes share.
	go s.watch()
	return s, nil
}

// Generation returns the process generation reported in each record.
func (s *Status) Generation() uint32 { return s.gen }

// Gone is closed when the master side of the channel goes away.
func (s *Status) Gone() <-chan struct{} { return s.gone }

// Notify tells the master whether this process is available (idle) or
// taken (busy with a client).
func (s *Status) Notify(avail bool) error {
	rec := s.record(avail)
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.fd < 0 {
		return errClosed
	}
	for {
		n, err := unix.Write(s.fd, rec)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("status channel: write: %w", err)
		}
		if n != len(rec) {
			return fmt.Errorf("status channel: short write (%d of %d bytes)", n, len(rec))
		}
		return nil
	}
}

// record encodes MASTER_STATUS {int pid; unsigned gen; int avail} in the
// host's byte order.
func (s *Status) record(avail bool) []byte {
	v := int32(statTaken)
	if avail {
		v = statAvail
	}
	rec := make([]byte, 0, statusRecordLen)
	rec = binary.NativeEndian.AppendUint32(rec, uint32(s.pid))
	rec = binary.NativeEndian.AppendUint32(rec, s.gen)
	rec = binary.NativeEndian.AppendUint32(rec, uint32(v))
	return rec
}

func (s *Status) watch() {
	defer close(s.watcher)
	fds := []unix.PollFd{
		{Fd: int32(s.fd), Events: unix.POLLIN},
		{Fd: int32(s.cancelR), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if fds[1].Revents != 0 {
			return
		}
		// Any event on the channel (data, end of file, hang-up, error)
		// means the master is gone; so does a failing poll.
		if err != nil || fds[0].Revents != 0 {
			close(s.gone)
			return
		}
	}
}

// Close stops watching and closes the status descriptor.
func (s *Status) Close() error {
	var err error
	s.closeOnce.Do(func() {
		unix.Write(s.cancelW, []byte{0})
		<-s.watcher
		unix.Close(s.cancelR)
		unix.Close(s.cancelW)
		s.writeMu.Lock()
		err = unix.Close(s.fd)
		s.fd = -1
		s.writeMu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("status channel: close: %w", err)
	}
	return nil
}

var errClosed = errors.New("status channel closed")

// Package keyfile keeps the session ticket key ring in a small file, so
// that tickets issued before a restart still decrypt after it.
//
// The file is opened once, before the daemon chroots, and rewritten in
// place through the kept descriptor. It holds one fixed-size record,
// small enough to sit in one disk sector, so that a write is all or
// nothing; the checksum catches anything else:
//
//	offset size
//	0      4    magic "TKRG"
//	4      1    version (1)
//	5      1    flags: 1 = current key present, 2 = previous key present
//	6      2    zero
//	8      88   current key (tktkey wire record, zero if absent)
//	96     88   previous key
//	184    4    CRC-32C of bytes 0..183, big-endian
//
// A record that fails any check loads as an empty ring, with a warning:
// the daemon then makes new keys, and old tickets fall back to full
// handshakes. Garbage is never returned as a key.
package keyfile

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// RecordLen is the size of the file.
const RecordLen = 188

const (
	magic       = "TKRG"
	version     = 1
	hasCurrent  = 1
	hasPrevious = 2
	currentOff  = 8
	previousOff = currentOff + proto.TicketKeyRecordLen
	sumOff      = previousOff + proto.TicketKeyRecordLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("keyfile: closed")

// File is a tktkey.Store in one file. It is safe for concurrent use.
type File struct {
	path string       // for messages only
	log  *slog.Logger // warnings about a damaged file

	mu  sync.Mutex
	f   *os.File
	buf [RecordLen]byte // holds key bytes only while a call runs
}

var _ tktkey.Store = (*File)(nil)

// Open opens or creates (mode 0600) the key file at path, refusing a link
// or a file that is not the caller's (see safefile). logger receives
// warnings about a damaged file; nil discards them.
func Open(path string, logger *slog.Logger) (*File, error) {
	logger = maillog.OrDiscard(logger)
	f, err := safefile.Open(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	if fi.Mode().Perm() != 0o600 {
		maillog.Warnf(logger, "ticket key file %s was mode %v; making it 0600", path, fi.Mode().Perm())
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("keyfile: %w", err)
		}
	}
	return &File{path: path, log: logger, f: f}, nil
}

// Load returns the saved ring; an empty file, or a damaged one (with a
// warning), gives an empty ring.
func (kf *File) Load(context.Context) (tktkey.Ring, error) {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.f == nil {
		return tktkey.Ring{}, ErrClosed
	}
	defer clear(kf.buf[:])
	fi, err := kf.f.Stat()
	if err != nil {
		return tktkey.Ring{}, fmt.Errorf("keyfile: %w", err)
	}
	switch {
	case fi.Size() == 0:
		return tktkey.Ring{}, nil
	case fi.Size() != RecordLen:
		maillog.Warnf(kf.log, "ticket key file %s has %d bytes, not %d; starting with new keys", kf.path, fi.Size(), RecordLen)
		return tktkey.Ring{}, nil
	}
	if _, err := kf.f.ReadAt(kf.buf[:], 0); err != nil {
		return tktkey.Ring{}, fmt.Errorf("keyfile: %w", err)
	}
	r, problem := decode(kf.buf[:])
	if problem != "" {
		maillog.Warnf(kf.log, "ticket key file %s is damaged (%s); starting with new keys", kf.path, problem)
		return tktkey.Ring{}, nil
	}
	return r, nil
}

func decode(b []byte) (tktkey.Ring, string) {
	if string(b[:4]) != magic {
		return tktkey.Ring{}, "not a ticket key file"
	}
	if binary.BigEndian.Uint32(b[sumOff:]) != crc32.Checksum(b[:sumOff], castagnoli) {
		return tktkey.Ring{}, "checksum mismatch"
	}
	if b[4] != version {
		return tktkey.Ring{}, fmt.Sprintf("version %d", b[4])
	}
	flags := b[5]
	if flags&^(hasCurrent|hasPrevious) != 0 || b[6] != 0 || b[7] != 0 {
		return tktkey.Ring{}, "unknown flags"
	}
	var r tktkey.Ring
	if flags&hasCurrent != 0 {
		r.Current = unmarshal(b[currentOff:previousOff])
	}
	if flags&hasPrevious != 0 {
		r.Previous = unmarshal(b[previousOff:sumOff])
	}
	return r, ""
}

func unmarshal(b []byte) *proto.TicketKey {
	k := new(proto.TicketKey)
	*k, _ = proto.ParseTicketKey(b) // the length is right by construction
	return k
}

// Save replaces the saved ring: one write at offset 0, then fdatasync.
func (kf *File) Save(_ context.Context, r tktkey.Ring) error {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.f == nil {
		return ErrClosed
	}
	b := kf.buf[:]
	defer clear(b)
	clear(b)
	copy(b, magic)
	b[4] = version
	if r.Current != nil {
		b[5] |= hasCurrent
		r.Current.MarshalTo(b[currentOff:previousOff])
	}
	if r.Previous != nil {
		b[5] |= hasPrevious
		r.Previous.MarshalTo(b[previousOff:sumOff])
	}
	binary.BigEndian.PutUint32(b[sumOff:], crc32.Checksum(b[:sumOff], castagnoli))
	if _, err := kf.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("keyfile: write %s: %w", kf.path, err)
	}
	// A file left longer by something else would not load; cut it.
	if fi, err := kf.f.Stat(); err == nil && fi.Size() != RecordLen {
		if err := kf.f.Truncate(RecordLen); err != nil {
			return fmt.Errorf("keyfile: truncate %s: %w", kf.path, err)
		}
	}
	if err := unix.Fdatasync(int(kf.f.Fd())); err != nil {
		return fmt.Errorf("keyfile: sync %s: %w", kf.path, err)
	}
	return nil
}

// Close closes the file. Later calls return ErrClosed.
func (kf *File) Close() error {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.f == nil {
		return nil
	}
	err := kf.f.Close()
	kf.f = nil
	return err
}

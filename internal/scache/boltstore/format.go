package boltstore

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"time"
	"unsafe"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// Layout of the bbolt file (format 1):
//
//	bucket "entries": id -> written(8) | crc32c(4) | session
//	bucket "expiry":  written(8) | id -> empty   (eviction and Expire order)
//	bucket "meta":    "format" -> formatName
//	                  "counts" -> entries(8) | bytes(8), updated in every write
//	                  "state"  -> see stateRecord
//
// written is Unix nanoseconds with the sign bit flipped, big-endian, so that
// byte order is time order also before 1970. The checksum covers the id
// length, the id, written and the session, so a value moved under another
// key or mixed with stale bytes fails it.
var (
	bucketEntries = []byte("entries")
	bucketExpiry  = []byte("expiry")
	bucketMeta    = []byte("meta")

	keyFormat = []byte("format")
	keyCounts = []byte("counts")
	keyState  = []byte("state")
)

const formatName = "tlsmgr-scache-1"

const (
	writtenLen     = 8
	valueHeaderLen = writtenLen + 4
	// maxIDLen keeps the expiry key (written + id) within bbolt's key limit.
	maxIDLen = 32768 - writtenLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Unix nanoseconds cover 1678 to 2262; other times cannot be stored.
var (
	minWritten = time.Unix(0, math.MinInt64)
	maxWritten = time.Unix(0, math.MaxInt64)
)

var errWrittenRange = errors.New("boltstore: written time outside 1678..2262")

func putWritten(dst []byte, nanos int64) {
	binary.BigEndian.PutUint64(dst, uint64(nanos)^(1<<63))
}

func getWritten(src []byte) int64 {
	return int64(binary.BigEndian.Uint64(src) ^ (1 << 63))
}

func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func checksum(id, written, session []byte) uint32 {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(id)))
	c := crc32.Update(0, castagnoli, n[:])
	c = crc32.Update(c, castagnoli, id)
	c = crc32.Update(c, castagnoli, written)
	return crc32.Update(c, castagnoli, session)
}

// encodeValue returns the stored form of e under id.
func encodeValue(id string, nanos int64, session []byte) []byte {
	v := make([]byte, valueHeaderLen+len(session))
	putWritten(v, nanos)
	copy(v[valueHeaderLen:], session)
	binary.BigEndian.PutUint32(v[writtenLen:], checksum(stringBytes(id), v[:writtenLen], session))
	return v
}

// decodeValue checks a stored value; ok is false when it is damaged.
func decodeValue(id, v []byte) (nanos int64, session []byte, ok bool) {
	if len(v) < valueHeaderLen {
		return 0, nil, false
	}
	session = v[valueHeaderLen:]
	if binary.BigEndian.Uint32(v[writtenLen:]) != checksum(id, v[:writtenLen], session) {
		return 0, nil, false
	}
	return getWritten(v), session, true
}

// storedSize is what an entry counts against the limits, from its stored
// value, damaged or not, as long as it has a header.
func storedSize(id, v []byte) int64 {
	n := len(v) - valueHeaderLen
	if n < 0 {
		n = 0
	}
	return int64(len(id)+n) + scache.EntryOverhead
}

func expiryKey(written []byte, id []byte) []byte {
	k := make([]byte, writtenLen+len(id))
	copy(k, written[:writtenLen])
	copy(k[writtenLen:], id)
	return k
}

type counts struct {
	entries int64
	bytes   int64
}

func (c counts) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(c.entries))
	binary.BigEndian.PutUint64(b[8:], uint64(c.bytes))
	return b
}

func decodeCounts(b []byte) (counts, bool) {
	if len(b) != 16 {
		return counts{}, false
	}
	return counts{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}, true
}

// stateRecord says whether the file can be trusted after a restart.
//
// cleanTxid is the bbolt transaction that wrote the record at Close, after
// a full sync; zero while the store is open. At Open the file is trusted
// if the record is that clean one and still the newest transaction (so no
// unsynced write followed it), or if it was written during the current boot
// (a process crash loses nothing the kernel already has). Anything else is
// a file that was open when the machine went down, whose unsynced pages may
// be missing or stale: it is moved aside.
type stateRecord struct {
	cleanTxid uint64
	bootID    string
}

const stateVersion = 1

func (r stateRecord) encode() []byte {
	b := make([]byte, 9, 9+len(r.bootID))
	b[0] = stateVersion
	binary.BigEndian.PutUint64(b[1:], r.cleanTxid)
	return append(b, r.bootID...)
}

func decodeState(b []byte) (stateRecord, bool) {
	if len(b) < 9 || b[0] != stateVersion {
		return stateRecord{}, false
	}
	return stateRecord{cleanTxid: binary.BigEndian.Uint64(b[1:]), bootID: string(b[9:])}, true
}

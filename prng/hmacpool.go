package prng

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// personalization labels this generator's instantiation (SP 800-90A
// personalization string), so that its output stream differs from any other
// HMAC_DRBG fed the same entropy.
const personalization = "github.com/gotlsmgr/tlsmgr/prng HMAC_DRBG SHA-256"

// osSeedLen is how many bytes of operating-system randomness are read for
// instantiation and at every reseed: the security strength of HMAC_DRBG
// with SHA-256 (256 bits).
const osSeedLen = 32

// drbgPool is the Pool: one HMAC_DRBG behind a mutex, plus the counters
// that Stats reports.
type drbgPool struct {
	mu   sync.Mutex
	drbg *hmacDRBG
	// pending absorbs Mix data cheaply; its digest is the additional input
	// of the next generate, so event data still passes through
	// HMAC_DRBG_Update before any output that follows it.
	pending  hash.Hash
	nPending int
	// osEntropy is crypto/rand.Reader outside tests. It is read outside mu.
	osEntropy io.Reader

	reads       atomic.Uint64
	bytesServed atomic.Uint64
}

// NewPool returns a Pool instantiated from the operating system's random
// generator, the time of day and the process id. It is strong from the
// start; Open adds the configured entropy source and exchange file on top.
func NewPool() Pool {
	return newPool(rand.Reader, time.Now())
}

func newPool(osEntropy io.Reader, now time.Time) *drbgPool {
	// SP 800-90A: entropy input of the security strength, a nonce of half
	// of it, and a personalization string. The nonce and personalization
	// carry the time and pid, which are not secret but make instantiations
	// unique even if the OS generator misbehaved.
	var entropy [osSeedLen]byte
	mustReadEntropy(osEntropy, entropy[:])
	nonce := make([]byte, osSeedLen/2, osSeedLen/2+8)
	mustReadEntropy(osEntropy, nonce)
	nonce = binary.BigEndian.AppendUint64(nonce, uint64(now.UnixNano()))
	pers := []byte(personalization)
	pers = binary.BigEndian.AppendUint64(pers, uint64(os.Getpid()))
	pers = binary.BigEndian.AppendUint64(pers, uint64(os.Getppid()))
	pers = binary.BigEndian.AppendUint64(pers, uint64(now.UnixNano()))
	return &drbgPool{
		drbg:      newHMACDRBG(entropy[:], nonce, pers),
		pending:   sha256.New(),
		osEntropy: osEntropy,
	}
}

// mustReadEntropy reads from the OS generator. crypto/rand does not fail
// on supported systems (the runtime aborts the program if getrandom breaks),
// so a failure here is a broken test reader.
func mustReadEntropy(r io.Reader, p []byte) {
	if _, err := io.ReadFull(r, p); err != nil {
		panic(fmt.Sprintf("prng: cannot read operating system randomness: %v", err))
	}
}

// Read fills p from the DRBG and counts it as served to a client.
func (p *drbgPool) Read(b []byte) (int, error) {
	p.generate(b)
	p.reads.Add(1)
	p.bytesServed.Add(uint64(len(b)))
	return len(b), nil
}

// generate fills b without counting it as served: the daemon's own uses
// (exchange file, timer intervals) are not client traffic.
func (p *drbgPool) generate(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var digest [sha256.Size]byte
	var additional []byte
	if p.nPending > 0 {
		additional = p.pending.Sum(digest[:0])
		p.pending.Reset()
		p.nPending = 0
	}
	for len(b) > 0 {
		n := min(len(b), maxBytesPerRequest)
		switch err := p.drbg.generate(b[:n], additional); err {
		case nil:
			b = b[n:]
			additional = nil
		case errReseedRequired:
			// Only after 2^48 requests; fetch fresh OS randomness as the
			// specification asks rather than refusing to serve.
			var fresh [osSeedLen]byte
			mustReadEntropy(p.osEntropy, fresh[:])
			p.drbg.reseed(fresh[:], nil)
		default:
			panic("prng: " + err.Error()) // n is bounded above; cannot happen
		}
	}
}

// Mix stirs data into the pool: it is hashed into the pending state now
// and enters HMAC_DRBG_Update as additional input with the next output.
// It does not reset the reseed counter: event data is not credited as
// entropy. Mix runs at every request, so it must cost next to nothing.
func (p *drbgPool) Mix(data []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(data)))
	p.mu.Lock()
	p.pending.Write(n[:]) // length-prefixed: inputs cannot run together
	p.pending.Write(data)
	p.nPending++
	p.mu.Unlock()
}

// reseed runs HMAC_DRBG_Reseed with the source bytes as entropy input and
// fresh operating-system randomness as additional input, so that a source
// that returns predictable data still leaves the pool at full strength.
func (p *drbgPool) reseed(sourceBytes []byte) {
	var fresh [osSeedLen]byte
	mustReadEntropy(p.osEntropy, fresh[:])
	p.mu.Lock()
	p.drbg.reseed(sourceBytes, fresh[:])
	p.mu.Unlock()
}

// randomByte draws one byte for a timer interval.
func (p *drbgPool) randomByte() byte {
	var b [1]byte
	p.generate(b[:])
	return b[0]
}

// MixTimeOfDay stirs the current time (seconds and nanoseconds) into pool.
// The daemon calls it at every request, as Postfix's tlsmgr does.
func MixTimeOfDay(pool Pool) {
	mixTime(pool, time.Now())
}

func mixTime(pool Pool, t time.Time) {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.Unix()))
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond()))
	pool.Mix(b[:])
}

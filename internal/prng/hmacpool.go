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
const personalization = "github.com/gotlsmgr/tlsmgr/internal/prng HMAC_DRBG SHA-256"

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

// mustNewPool returns a Pool instantiated from the operating system's random
// generator, the time of day and the process id. It is strong from the
// start; Open adds the configured entropy source and exchange file on top.
// It panics if crypto/rand.Reader fails: Go's own reader never returns an
// error (the runtime aborts instead), so only a replaced reader can, and a
// pool without entropy must not be handed out. Open reports the error.
func mustNewPool() Pool {
	p, err := newPool(rand.Reader, time.Now())
	if err != nil {
		panic("prng: " + err.Error())
	}
	return p
}

func newPool(osEntropy io.Reader, now time.Time) (*drbgPool, error) {
	// SP 800-90A: entropy input of the security strength, a nonce of half
	// of it, and a personalization string. The nonce and personalization
	// carry the time and pid, which are not secret but make instantiations
	// unique even if the OS generator misbehaved.
	var entropy [osSeedLen]byte
	nonce := make([]byte, osSeedLen/2, osSeedLen/2+8)
	if err := readOSEntropy(osEntropy, entropy[:]); err != nil {
		return nil, err
	}
	if err := readOSEntropy(osEntropy, nonce); err != nil {
		return nil, err
	}
	nonce = binary.BigEndian.AppendUint64(nonce, uint64(now.UnixNano()))
	pers := []byte(personalization)
	pers = binary.BigEndian.AppendUint64(pers, uint64(os.Getpid()))
	pers = binary.BigEndian.AppendUint64(pers, uint64(os.Getppid()))
	pers = binary.BigEndian.AppendUint64(pers, uint64(now.UnixNano()))
	return &drbgPool{
		drbg:      newHMACDRBG(entropy[:], nonce, pers),
		pending:   sha256.New(),
		osEntropy: osEntropy,
	}, nil
}

func readOSEntropy(r io.Reader, p []byte) error {
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("cannot read operating system randomness: %w", err)
	}
	return nil
}

// Read fills p from the DRBG and counts it as served to a client.
func (p *drbgPool) Read(b []byte) (int, error) {
	if err := p.generate(b); err != nil {
		return 0, err
	}
	p.reads.Add(1)
	p.bytesServed.Add(uint64(len(b)))
	return len(b), nil
}

// generate fills b without counting it as served: the daemon's own uses
// (exchange file, timer intervals) are not client traffic. It fails only
// when the DRBG demands a reseed and the OS generator cannot supply it.
func (p *drbgPool) generate(b []byte) error {
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
			// Only after 2^48 requests without a reseed; fetch fresh OS
			// randomness as the specification asks. Without it the
			// specification forbids further output.
			var fresh [osSeedLen]byte
			if err := readOSEntropy(p.osEntropy, fresh[:]); err != nil {
				return fmt.Errorf("prng: reseed required: %w", err)
			}
			p.drbg.reseed(fresh[:], nil)
		default:
			panic("prng: " + err.Error()) // n is bounded above; cannot happen
		}
	}
	return nil
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

// reseed runs HMAC_DRBG_Reseed with 32 fresh bytes from the OS generator
// as entropy input, so that the pool never depends on the configured source
// alone. Source bytes that passed the health tests (credited) join the
// entropy input; others only enter as additional input. HMAC_DRBG hashes
// both alike: the difference is what the manager reports, and what happens
// when the OS generator fails (the error is returned): credited bytes still
// reseed, uncredited ones are only mixed, without resetting the reseed
// counter, so that they never stand in for entropy.
func (p *drbgPool) reseed(sourceBytes []byte, credited bool) error {
	var fresh [osSeedLen]byte
	osErr := readOSEntropy(p.osEntropy, fresh[:])
	var entropy, additional []byte
	if osErr == nil {
		entropy = fresh[:]
	}
	if credited {
		entropy = append(entropy, sourceBytes...)
	} else {
		additional = sourceBytes
	}
	if len(entropy) == 0 {
		if len(additional) > 0 {
			p.Mix(additional)
		}
		return osErr
	}
	p.mu.Lock()
	p.drbg.reseed(entropy, additional)
	p.mu.Unlock()
	return osErr
}

// randomByte draws one byte for a timer interval; ok is false if the pool
// cannot produce output.
func (p *drbgPool) randomByte() (b byte, ok bool) {
	var buf [1]byte
	if p.generate(buf[:]) != nil {
		return 0, false
	}
	return buf[0], true
}

func mixTime(pool Pool, t time.Time) {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.Unix()))
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond()))
	pool.Mix(b[:])
}

package prng

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

var fixedTime = time.Date(2024, 11, 20, 23, 51, 51, 0, time.UTC)

func mustPool(t *testing.T, osEntropy io.Reader, now time.Time) *drbgPool {
	t.Helper()
	p, err := newPool(osEntropy, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolReadsNeverRepeat(t *testing.T) {
	p := mustNewPool()
	seen := map[string]bool{}
	for i := range 20000 {
		b := string(poolBytes(t, p, 32))
		if seen[b] {
			t.Fatalf("read %d repeats an earlier output", i)
		}
		seen[b] = true
	}
	if a, b := poolBytes(t, mustNewPool(), 32), poolBytes(t, mustNewPool(), 32); bytes.Equal(a, b) {
		t.Fatal("two pools produced the same bytes")
	}
}

func TestPoolOutputLooksRandom(t *testing.T) {
	// A gross check (not a statistical test suite): over 1 MiB, each
	// byte value appears close to 4096 times and the bits are balanced.
	b := poolBytes(t, mustNewPool(), 1<<20)
	var counts [256]int
	ones := 0
	for _, c := range b {
		counts[c]++
		for ; c != 0; c &= c - 1 {
			ones++
		}
	}
	for v, n := range counts {
		if n < 3500 || n > 4700 {
			t.Errorf("byte %#02x occurs %d times in 1 MiB", v, n)
		}
	}
	if bits := 8 << 20; ones < bits/2-20000 || ones > bits/2+20000 {
		t.Errorf("%d one bits of %d", ones, bits)
	}
}

func TestPoolMixChangesStream(t *testing.T) {
	// Same OS randomness and time: the same stream, so the differences
	// below come from Mix alone.
	a := mustPool(t, &countingReader{}, fixedTime)
	b := mustPool(t, &countingReader{}, fixedTime)
	if !bytes.Equal(poolBytes(t, a, 64), poolBytes(t, b, 64)) {
		t.Fatal("identically seeded pools differ")
	}
	a.Mix([]byte("attacker-chosen"))
	outA, outB := poolBytes(t, a, 64), poolBytes(t, b, 64)
	if bytes.Equal(outA, outB) {
		t.Fatal("Mix did not change the output stream")
	}
	// Mixing the same data into both keeps them in step: Mix is a
	// deterministic update, not a source of hidden randomness.
	a2 := mustPool(t, &countingReader{}, fixedTime)
	a2.Read(make([]byte, 64))
	a2.Mix([]byte("attacker-chosen"))
	if !bytes.Equal(poolBytes(t, a2, 64), outA) {
		t.Fatal("same seed and same Mix gave different streams")
	}
	// Even an empty Mix advances the state.
	c := mustPool(t, &countingReader{}, fixedTime)
	d := mustPool(t, &countingReader{}, fixedTime)
	c.Mix(nil)
	if bytes.Equal(poolBytes(t, c, 32), poolBytes(t, d, 32)) {
		t.Fatal("Mix(nil) did not change the state")
	}
}

func TestPoolSeededFromOSRandomness(t *testing.T) {
	a := mustPool(t, &countingReader{}, fixedTime)
	b := mustPool(t, &countingReader{next: 1}, fixedTime)
	if bytes.Equal(poolBytes(t, a, 32), poolBytes(t, b, 32)) {
		t.Fatal("instantiation ignores the OS randomness")
	}
	c := mustPool(t, &countingReader{}, fixedTime.Add(time.Microsecond))
	if bytes.Equal(poolBytes(t, mustPool(t, &countingReader{}, fixedTime), 32), poolBytes(t, c, 32)) {
		t.Fatal("instantiation ignores the time")
	}
}

func TestPoolLargeReadAndReseedInterval(t *testing.T) {
	p := mustPool(t, &countingReader{}, fixedTime)
	big := poolBytes(t, p, 3*maxBytesPerRequest+5)
	if bytes.Equal(big[:maxBytesPerRequest], big[maxBytesPerRequest:2*maxBytesPerRequest]) {
		t.Fatal("request chunks repeat")
	}
	p.drbg.reseedInterval = 3
	for range 10 {
		poolBytes(t, p, 32) // reseeds from the OS instead of failing
	}
	if p.drbg.reseedCounter > 4 {
		t.Fatalf("reseed counter %d beyond the interval", p.drbg.reseedCounter)
	}
	if n, err := p.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}

func TestPoolConcurrentUse(t *testing.T) {
	p := mustNewPool().(*drbgPool)
	var wg sync.WaitGroup
	results := make(chan string, 8*500)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32)
			for i := range 500 {
				if g%2 == 0 {
					mixTime(p, time.Now())
				} else {
					p.Mix([]byte{byte(i)})
				}
				p.Read(buf)
				results <- string(buf)
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := map[string]bool{}
	for r := range results {
		if seen[r] {
			t.Fatal("concurrent readers got the same bytes")
		}
		seen[r] = true
	}
	if p.reads.Load() != 4000 || p.bytesServed.Load() != 4000*32 {
		t.Fatalf("counters: %d reads, %d bytes", p.reads.Load(), p.bytesServed.Load())
	}
}

func TestPoolInternalUseIsNotCounted(t *testing.T) {
	p := mustPool(t, &countingReader{}, fixedTime)
	p.generate(make([]byte, 1024))
	p.randomByte()
	p.Read(make([]byte, 7))
	if p.reads.Load() != 1 || p.bytesServed.Load() != 7 {
		t.Fatalf("counters: %d reads, %d bytes; want 1, 7", p.reads.Load(), p.bytesServed.Load())
	}
}

func BenchmarkRead32(b *testing.B) {
	p := mustNewPool()
	buf := make([]byte, 32)
	b.SetBytes(32)
	b.ReportAllocs()
	for b.Loop() {
		p.Read(buf)
	}
}

func BenchmarkRead255(b *testing.B) {
	p := mustNewPool()
	buf := make([]byte, 255)
	b.SetBytes(255)
	b.ReportAllocs()
	for b.Loop() {
		p.Read(buf)
	}
}

// BenchmarkMix mixes a time-of-day sized value, as every request does.
func BenchmarkMix(b *testing.B) {
	p := mustNewPool()
	data := make([]byte, 12)
	b.ReportAllocs()
	for b.Loop() {
		p.Mix(data)
	}
}

func BenchmarkMixTime(b *testing.B) {
	p := mustNewPool()
	b.ReportAllocs()
	for b.Loop() {
		mixTime(p, time.Now())
	}
}

// BenchmarkMixCacheEntry mixes a typical session-cache entry (a sweep does
// this per entry).
func BenchmarkMixCacheEntry(b *testing.B) {
	p := mustNewPool()
	data := make([]byte, 1500)
	b.ReportAllocs()
	for b.Loop() {
		p.Mix(data)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("getrandom: broken") }

// TestPoolReseedMixesOSEntropy: pools in the same state, reseeded with
// the same constant source bytes, differ exactly when the OS generator
// gave them different bytes, whether the source is credited or not.
func TestPoolReseedMixesOSEntropy(t *testing.T) {
	dead := make([]byte, 255)
	for _, credited := range []bool{true, false} {
		a := mustPool(t, &countingReader{}, fixedTime)
		b := mustPool(t, &countingReader{}, fixedTime)
		c := mustPool(t, &countingReader{}, fixedTime)
		c.osEntropy = &countingReader{next: 100}
		for _, p := range []*drbgPool{a, b, c} {
			if err := p.reseed(dead, credited); err != nil {
				t.Fatal(err)
			}
		}
		outA := poolBytes(t, a, 32)
		if !bytes.Equal(outA, poolBytes(t, b, 32)) {
			t.Fatalf("credited %v: same state and inputs, different output", credited)
		}
		if bytes.Equal(outA, poolBytes(t, c, 32)) {
			t.Fatalf("credited %v: the reseed ignores the OS generator's bytes", credited)
		}
	}
}

// TestPoolReseedWithoutOSEntropy: a failing OS generator is an error, not
// a crash. Credited source bytes still reseed; uncredited ones are mixed
// in but do not reset the reseed counter: they never stand in for entropy.
func TestPoolReseedWithoutOSEntropy(t *testing.T) {
	twin := func() *drbgPool {
		p := mustPool(t, &countingReader{}, fixedTime)
		p.osEntropy = failingReader{}
		for range 3 {
			poolBytes(t, p, 32)
		}
		return p
	}
	p, q := twin(), twin()
	if err := p.reseed(randomBytes(32), true); err == nil || !strings.Contains(err.Error(), "getrandom: broken") {
		t.Fatalf("credited reseed without OS entropy: %v", err)
	}
	if p.drbg.reseedCounter != 1 {
		t.Fatalf("credited source bytes did not reseed: counter %d", p.drbg.reseedCounter)
	}
	if err := q.reseed(make([]byte, 32), false); err == nil {
		t.Fatal("uncredited reseed without OS entropy: no error")
	}
	if q.drbg.reseedCounter != 4 {
		t.Fatalf("uncredited bytes reset the reseed counter to %d", q.drbg.reseedCounter)
	}
	if bytes.Equal(poolBytes(t, q, 32), poolBytes(t, twin(), 32)) {
		t.Fatal("uncredited bytes were dropped instead of mixed in")
	}
	if err := q.reseed(nil, false); err == nil || q.drbg.reseedCounter != 5 {
		t.Fatalf("OS-only reseed without OS entropy: %v, counter %d", err, q.drbg.reseedCounter)
	}
}

// TestPoolReseedRequiredWithoutOSEntropy: when the DRBG demands a reseed
// and the OS generator fails, Read fails (SP 800-90A forbids output) and
// recovers with the generator.
func TestPoolReseedRequiredWithoutOSEntropy(t *testing.T) {
	p := mustPool(t, &countingReader{}, fixedTime)
	p.drbg.reseedInterval = 3
	p.osEntropy = failingReader{}
	var err error
	for range 5 {
		if _, err = p.Read(make([]byte, 32)); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "reseed required") {
		t.Fatalf("Read past the reseed interval without OS entropy: %v", err)
	}
	if p.reads.Load() != 3 {
		t.Fatalf("%d reads counted, want the 3 that succeeded", p.reads.Load())
	}
	p.osEntropy = &countingReader{}
	poolBytes(t, p, 32)
}

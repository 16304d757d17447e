package prng

import (
	"bytes"
	"crypto/rand"
	"math/big"
	"testing"
)

// TestRCTCutoff checks C = 1 + ceil(-log2(α)/H) (SP 800-90B 4.4.1) against
// values worked out by hand, and Go's own SP 800-90B entropy source
// (crypto/internal/entropy: H = 0.5, α = 2^-20, C = 41).
func TestRCTCutoff(t *testing.T) {
	for _, c := range []struct {
		h         float64
		alphaLog2 int
		want      int
	}{
		{0.5, 20, 41}, // crypto/internal/entropy
		{1, 20, 21},
		{1, 30, 31},
		{2, 20, 11},
		{3, 20, 8}, // 20/3 = 6.67
		{4, 20, 6},
		{8, 20, 4}, // 20/8 = 2.5
		{0.9, 20, 24},
	} {
		if got := rctCutoff(c.h, c.alphaLog2); got != c.want {
			t.Errorf("rctCutoff(H=%v, α=2^-%d) = %d, want %d", c.h, c.alphaLog2, got, c.want)
		}
	}
}

// TestAPTCutoffPublished checks C = 1 + CRITBINOM(W, 2^-H, 1-α) (SP
// 800-90B 4.4.2) against values others computed from it: Go's
// crypto/internal/entropy (W = 512, H = 0.5, α = 2^-20: 410) and Nordic's
// nRF54 TRNG data sheet (W = 512, H = 8, α = 2^-20: 13).
func TestAPTCutoffPublished(t *testing.T) {
	if got := aptCutoff(512, 0.5, 20); got != 410 {
		t.Errorf("aptCutoff(512, 0.5, 2^-20) = %d, want 410", got)
	}
	if got := aptCutoff(512, 8, 20); got != 13 {
		t.Errorf("aptCutoff(512, 8, 2^-20) = %d, want 13", got)
	}
}

// exactCritBinom is CRITBINOM(n, 2^-h, 1-2^-alphaLog2) for a whole h, in
// integers: the smallest k with
// sum_{j>k} C(n,j) (2^h-1)^(n-j) * 2^alphaLog2 <= 2^(h*n).
func exactCritBinom(n, h, alphaLog2 int) int {
	limit := new(big.Int).Lsh(big.NewInt(1), uint(h*n))
	q := big.NewInt(int64(1)<<h - 1) // (1-p) * 2^h
	tail, scaled := new(big.Int), new(big.Int)
	term := big.NewInt(1) // C(n,k) (2^h-1)^(n-k), for k = n
	for k := n; k > 0; k-- {
		next := new(big.Int).Add(tail, term)
		if scaled.Lsh(next, uint(alphaLog2)).Cmp(limit) > 0 {
			return k
		}
		tail = next
		// C(n,k-1) = C(n,k) k / (n-k+1), and one more factor 2^h-1.
		term.Mul(term, big.NewInt(int64(k)))
		term.Mul(term, q)
		term.Quo(term, big.NewInt(int64(n-k+1)))
	}
	return 0
}

// TestAPTCutoffExact compares the floating-point CRITBINOM with exact
// integer arithmetic wherever 2^-H is a dyadic rational.
func TestAPTCutoffExact(t *testing.T) {
	for _, w := range []int{512, 1024} {
		for _, h := range []int{1, 2, 4, 8} {
			for _, a := range []int{20, 30} {
				want := 1 + exactCritBinom(w, h, a)
				if got := aptCutoff(w, float64(h), a); got != want {
					t.Errorf("aptCutoff(W=%d, H=%d, α=2^-%d) = %d, exact %d", w, h, a, got, want)
				}
			}
		}
	}
}

// TestChosenCutoffs pins the cutoffs that docs/prng.md states, and checks the
// false-positive rates claimed there for a source of exactly
// healthMinEntropy = 1 bit per byte (most likely byte: probability 1/2).
func TestChosenCutoffs(t *testing.T) {
	if healthMinEntropy != 1 || rctCutoffValue != 21 || aptCutoffValue != 325 || patternCutoffValue != 31 {
		t.Fatalf("H=%v RCT %d APT %d pattern %d; docs/prng.md says H=1, 21, 325, 31",
			healthMinEntropy, rctCutoffValue, aptCutoffValue, patternCutoffValue)
	}
	// The APT as run counts the window's first sample plus the matches
	// among the other W-1, while the standard's formula takes Bin(W, p).
	// Exactly: P(1 + Bin(511, 1/2) >= C) * 2^30 <= 2^511.
	tail := new(big.Int)
	for j := aptCutoffValue - 1; j <= aptWindow-1; j++ {
		tail.Add(tail, new(big.Int).Binomial(aptWindow-1, int64(j)))
	}
	if tail.Lsh(tail, aptAlphaLog2).Cmp(new(big.Int).Lsh(big.NewInt(1), aptWindow-1)) > 0 {
		t.Errorf("a window of the APT fails with probability above 2^-%d", aptAlphaLog2)
	}
	// The pattern test: each of its lags at most 2^-(C-1) per position, and
	// all of them together within the RCT's 2^-20.
	lags := big.NewInt(patternMaxLag - 1)
	if lags.Lsh(lags, rctAlphaLog2).Cmp(new(big.Int).Lsh(big.NewInt(1), uint(patternCutoffValue-1))) > 0 {
		t.Errorf("%d lags at 2^-%d each exceed 2^-%d", patternMaxLag-1, patternCutoffValue-1, rctAlphaLog2)
	}
}

// firstFailure feeds samples one at a time to h and returns the 1-based
// index of the first that fails and the test's name (0, "" if none).
func firstFailure(h *healthTests, samples []byte) (int, string) {
	for i := range samples {
		if _, failures, name := h.feed(samples[i : i+1]); failures > 0 {
			return i + 1, name
		}
	}
	return 0, ""
}

func TestHealthConstantSource(t *testing.T) {
	h := newHealthTests()
	// C = 21 identical samples: 20 pass, the 21st fails.
	at, name := firstFailure(h, make([]byte, 100))
	if at != rctCutoffValue || name != rctName {
		t.Fatalf("zeros fail at sample %d (%q), want %d (%q)", at, name, rctCutoffValue, rctName)
	}
	// It stays failing: every later read fails again and is not credited.
	for range 50 {
		if credit, failures, _ := h.feed(make([]byte, 255)); credit || failures == 0 {
			t.Fatalf("a constant read: credit %v, %d failures", credit, failures)
		}
	}
	if h.healthy() {
		t.Fatal("a constant source became healthy")
	}
	// Continuous: a constant source read 5 bytes at a time is caught
	// across reads, at its 21st byte.
	h = newHealthTests()
	for i := range 4 {
		if credit, failures, _ := h.feed(bytes.Repeat([]byte{0xa5}, 5)); !credit || failures != 0 {
			t.Fatalf("read %d: credit %v, %d failures; too early for a cutoff of %d", i, credit, failures, rctCutoffValue)
		}
	}
	if credit, failures, name := h.feed(bytes.Repeat([]byte{0xa5}, 5)); credit || failures == 0 || name != rctName {
		t.Fatalf("fifth read of 5 identical bytes: credit %v, %d failures, %q", credit, failures, name)
	}
}

// TestHealthRepeatedBlock: a source that replays one random 255-byte block
// never repeats a byte value often enough for the RCT or the APT; the
// pattern test catches it 30 matches into the second copy.
func TestHealthRepeatedBlock(t *testing.T) {
	block := randomBytes(255)
	h := newHealthTests()
	if credit, failures, _ := h.feed(block); !credit || failures != 0 {
		t.Fatalf("first copy: credit %v, %d failures", credit, failures)
	}
	at, name := firstFailure(h, block)
	if at != patternCutoffValue-1 || name != patternName {
		t.Fatalf("second copy fails at its sample %d (%q), want %d (%q)", at, name, patternCutoffValue-1, patternName)
	}
	for range 20 {
		credit, failures, name := h.feed(block)
		if credit || failures == 0 || name != patternName {
			t.Fatalf("later copy: credit %v, %d failures, %q; only the pattern test should see it", credit, failures, name)
		}
	}
}

// TestHealthCounter: 0, 1, ..., 255, 0, 1, ... has no repeated value and a
// flat histogram, but period 256.
func TestHealthCounter(t *testing.T) {
	counter := make([]byte, 1024)
	for i := range counter {
		counter[i] = byte(i)
	}
	at, name := firstFailure(newHealthTests(), counter)
	if want := 256 + patternCutoffValue - 1; at != want || name != patternName {
		t.Fatalf("counter fails at sample %d (%q), want %d (%q)", at, name, want, patternName)
	}
}

// TestHealthBiasedSource: two zeros then a random non-zero byte, over and
// over: no long run, no period (the random bytes differ), but two thirds
// of the samples are zero, above the APT's 325 of 512.
func TestHealthBiasedSource(t *testing.T) {
	samples := make([]byte, 3*512)
	for i := 2; i < len(samples); i += 3 {
		for samples[i] == 0 {
			rand.Read(samples[i : i+1])
		}
	}
	at, name := firstFailure(newHealthTests(), samples)
	if name != aptName {
		t.Fatalf("biased source: failure %q at %d, want %q", name, at, aptName)
	}
	// The window starts with a zero, so B reaches C at the C-th zero;
	// zeros sit at samples 3m+1 and 3m+2.
	k := aptCutoffValue - 1
	if want := 3*(k/2) + 1 + k%2; at != want {
		t.Fatalf("biased source fails at sample %d, want the %d-th zero (sample %d)", at, aptCutoffValue, want)
	}
}

// TestHealthRecovery: after a failure, a full APT window of clean samples
// makes the source healthy; the read that completes it is still not
// credited, the next one is.
func TestHealthRecovery(t *testing.T) {
	h := newHealthTests()
	if _, failures, _ := h.feed(make([]byte, rctCutoffValue)); failures != 1 {
		t.Fatalf("%d failures for %d zeros, want 1", failures, rctCutoffValue)
	}
	good := randomBytes(aptWindow + 64)
	if credit, failures, _ := h.feed(good[:aptWindow-1]); credit || failures != 0 || h.healthy() {
		t.Fatalf("after %d clean samples: credit %v, %d failures, healthy %v", aptWindow-1, credit, failures, h.healthy())
	}
	if credit, _, _ := h.feed(good[aptWindow-1 : aptWindow]); credit || !h.healthy() {
		t.Fatalf("after %d clean samples: credit %v, healthy %v; want healthy, not yet credited", aptWindow, credit, h.healthy())
	}
	if credit, failures, _ := h.feed(good[aptWindow:]); !credit || failures != 0 {
		t.Fatalf("first read after recovery: credit %v, %d failures", credit, failures)
	}
	// A failure during recovery starts the count again.
	h.feed(make([]byte, rctCutoffValue))
	h.feed(good[:400])
	h.feed(make([]byte, rctCutoffValue))
	h.feed(good[:400])
	if h.healthy() {
		t.Fatal("healthy after 400 clean samples since the last failure")
	}
}

// TestHealthSoundSources: the OS generator (8 bits per byte) and a source
// of only 2 bits per byte (bytes drawn from four values) never trip the
// tests. Cutoffs derived from H = 8 would fail the second at once (C = 4
// for the RCT: probability 1/64 at every sample).
func TestHealthSoundSources(t *testing.T) {
	h := newHealthTests()
	buf := make([]byte, 255)
	for i := range 4096 { // 1 MiB, 2040 APT windows
		rand.Read(buf)
		if credit, failures, name := h.feed(buf); !credit || failures != 0 {
			t.Fatalf("crypto/rand read %d: credit %v, %d failures (%s)", i, credit, failures, name)
		}
	}
	h = newHealthTests()
	for i := range 256 { // 64 KiB
		rand.Read(buf)
		for j := range buf {
			buf[j] &= 3
		}
		if credit, failures, name := h.feed(buf); !credit || failures != 0 {
			t.Fatalf("2-bit read %d: credit %v, %d failures (%s)", i, credit, failures, name)
		}
	}
}

func BenchmarkHealthFeed255(b *testing.B) {
	h := newHealthTests()
	buf := randomBytes(255)
	b.SetBytes(255)
	for b.Loop() {
		rand.Read(buf)
		h.feed(buf)
	}
}

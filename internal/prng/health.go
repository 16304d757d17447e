package prng

import "math"

// Continuous health tests on the bytes of tls_random_source, after NIST
// SP 800-90B section 4.4: the Repetition Count Test, the Adaptive
// Proportion Test, and a repeated-pattern test of our own (a stuck source
// that replays one buffer repeats no single byte value, so the first two
// cannot see it). docs/prng.md gives the parameters and the arithmetic.

const (
	// healthMinEntropy is the min-entropy per byte, in bits, that the
	// cutoffs assume. The configured source is not assessed, so the tests
	// only claim to catch a source whose most likely byte is more likely
	// than 1/2 (stuck, constant, replaying, grossly biased); a sound
	// source, with close to 8 bits, then practically never trips them.
	healthMinEntropy = 1.0

	// -log2 of the false-positive probability α of each test for a source
	// with exactly healthMinEntropy: 2^-20 for the RCT (as Go's own
	// SP 800-90B source uses); 2^-30 for the APT and for each lag of the
	// pattern test, whose 511 lags together stay below 2^-21.
	rctAlphaLog2     = 20
	aptAlphaLog2     = 30
	patternAlphaLog2 = 30

	aptWindow = 512 // SP 800-90B's W for non-binary samples
	// patternMaxLag is the longest period the pattern test sees: it covers
	// a replayed device or EGD answer (at most 255 bytes) and a byte
	// counter (period 256).
	patternMaxLag = 512
)

var (
	rctCutoffValue     = rctCutoff(healthMinEntropy, rctAlphaLog2)
	aptCutoffValue     = aptCutoff(aptWindow, healthMinEntropy, aptAlphaLog2)
	patternCutoffValue = rctCutoff(healthMinEntropy, patternAlphaLog2)
)

// rctCutoff is SP 800-90B's C = 1 + ceil(-log2(α) / H) (section 4.4.1): C
// identical samples in a row have probability at most 2^(-H(C-1)) <= α.
func rctCutoff(h float64, alphaLog2 int) int {
	return 1 + int(math.Ceil(float64(alphaLog2)/h))
}

// aptCutoff is SP 800-90B's C = 1 + CRITBINOM(W, 2^-H, 1-α) (section
// 4.4.2).
func aptCutoff(w int, h float64, alphaLog2 int) int {
	return 1 + critBinom(w, math.Exp2(-h), math.Exp2(-float64(alphaLog2)))
}

// critBinom is the smallest k with P(X <= k) >= 1-alpha for X binomial
// with n trials of probability p. It sums the upper tail from the top,
// in log space, rather than subtracting a CDF from 1: near 1-2^-30 the
// subtraction would lose the digits that decide k.
func critBinom(n int, p, alpha float64) int {
	lnP, lnQ := math.Log(p), math.Log1p(-p)
	lgN, _ := math.Lgamma(float64(n + 1))
	tail := 0.0 // P(X > k)
	k := n
	for ; k > 0; k-- {
		lgK, _ := math.Lgamma(float64(k + 1))
		lgNK, _ := math.Lgamma(float64(n - k + 1))
		next := tail + math.Exp(lgN-lgK-lgNK+float64(k)*lnP+float64(n-k)*lnQ)
		if next > alpha { // P(X > k-1) > alpha: k is the smallest
			break
		}
		tail = next
	}
	return k
}

// Names of the tests, for the log.
const (
	rctName     = "repetition count"
	aptName     = "adaptive proportion"
	patternName = "repeated pattern"
)

// healthTests holds the state of the three tests across every read of one
// configured source, so that failures spanning reads are caught. Not safe
// for concurrent use.
type healthTests struct {
	n uint64 // samples seen; sample positions are 1-based

	rctLast byte
	rctRun  int // B of section 4.4.1

	aptRef   byte // A of section 4.4.2
	aptCount int  // B
	aptSeen  int  // samples of the current window; 0 starts a new one

	// The pattern test keeps, for every lag d in [2, patternMaxLag], the
	// number of consecutive samples equal to the one d before. Only lags
	// at which the new sample matches are visited, through a chain of the
	// earlier positions of each byte value (as in an LZ77 matcher), so a
	// sound source costs about three steps per byte, not patternMaxLag.
	lastPos  [256]uint64           // latest position of each value (0: none)
	prevPos  [patternMaxLag]uint64 // [pos % patternMaxLag]: previous position of the same value
	matchEnd [patternMaxLag + 1]uint64
	matchRun [patternMaxLag + 1]int

	failing bool
	clean   int // samples without a failure since the last one
}

func newHealthTests() *healthTests { return &healthTests{} }

// healthy is false from a failure until aptWindow samples in a row have
// passed every test; failures restart the APT window, so this is one full
// window without a failure.
func (h *healthTests) healthy() bool { return !h.failing }

// feed runs one read through the tests. credit is true when the source
// was healthy before the read and every sample passed; failures counts the
// samples at which a test failed, failed names the first such test.
func (h *healthTests) feed(samples []byte) (credit bool, failures int, failed string) {
	wasHealthy := !h.failing
	for _, x := range samples {
		if name := h.sample(x); name != "" {
			if failures == 0 {
				failed = name
			}
			failures++
			h.failing = true
			h.clean = 0
			h.aptSeen = 0
		} else if h.failing {
			h.clean++
			if h.clean >= aptWindow {
				h.failing = false
			}
		}
	}
	return wasHealthy && failures == 0, failures, failed
}

// sample runs the three tests on one sample and names the first that
// failed ("" if none). A test that fails restarts its own count.
func (h *healthTests) sample(x byte) string {
	h.n++
	n := h.n
	failed := ""

	if n > 1 && x == h.rctLast {
		h.rctRun++
		if h.rctRun >= rctCutoffValue {
			failed = rctName
			h.rctRun = 1
		}
	} else {
		h.rctLast, h.rctRun = x, 1
	}

	if h.aptSeen == 0 {
		h.aptRef, h.aptCount, h.aptSeen = x, 1, 1
	} else {
		h.aptSeen++
		if x == h.aptRef {
			h.aptCount++
			if h.aptCount >= aptCutoffValue && failed == "" {
				failed = aptName
			}
		}
		if h.aptSeen == aptWindow {
			h.aptSeen = 0
		}
	}

	for p := h.lastPos[x]; p != 0 && n-p <= patternMaxLag; p = h.prevPos[p%patternMaxLag] {
		d := n - p
		if d == 1 {
			continue // the RCT's case
		}
		if h.matchEnd[d] == n-1 {
			h.matchRun[d]++
		} else {
			h.matchRun[d] = 1
		}
		h.matchEnd[d] = n
		// Counted like the RCT's B: the first sample of the repeat plus
		// its matches.
		if 1+h.matchRun[d] >= patternCutoffValue {
			h.matchRun[d] = 0
			if failed == "" {
				failed = patternName
			}
		}
	}
	h.prevPos[n%patternMaxLag] = h.lastPos[x]
	h.lastPos[x] = n
	return failed
}

package maillog

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Warnings and errors are rate-limited per cause, so that a client
// repeating a bad request cannot fill the disk through the log: 1 MiB of
// hostile input once produced 37,728 lines in 3 s.
//
// limitBurst lets the start of an incident through in full: the first ten
// offenders, with their addresses, are what an operator needs to find it.
// After that one record per limitInterval per cause (at most 360 an hour)
// shows the incident is still going on, and its suppressed count shows how
// hard. Ten seconds is short enough that the log of a quiet server does not
// look different, and long enough that a flood costs a few lines a minute.
const (
	limitBurst    = 10
	limitInterval = 10 * time.Second
)

// maxCauses bounds the table. Causes are format strings, of which the
// program has a few dozen; the bound only matters if a caller builds format
// strings from data.
const maxCauses = 256

// A cause is the format string of the call: "request from %s exceeds the
// size limits ..." is one cause whatever the peer.
type causeKey struct {
	level  int
	format string
}

// bucket is a token bucket kept as the time at which it would be full
// again (the "theoretical arrival time" of GCRA): one field instead of a
// token count and a refill time, and exact integer arithmetic.
type bucket struct {
	full       time.Time
	suppressed uint64 // since the last record of this bucket was logged
}

type limiter struct {
	mu     sync.Mutex
	causes map[causeKey]*bucket
	// overflow is shared, per level, by the causes that found the table
	// full; its count is reported as "other" records, not "similar".
	overflow  [levelError - levelWarn + 1]bucket
	nextSweep time.Time
	total     atomic.Uint64
}

// allow decides whether a record of key may be logged at now. If so,
// suppressed is the count of records of its bucket dropped since the last
// one logged, and other tells that the bucket is the shared overflow one.
func (lim *limiter) allow(key causeKey, now time.Time) (ok bool, suppressed uint64, other bool) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	b := lim.causes[key]
	if b == nil {
		if b = lim.add(key, now); b == nil {
			b, other = &lim.overflow[key.level-levelWarn], true
		}
	}
	if b.full.IsZero() {
		// New: full now, whatever the clock says (a test's may be set to
		// a syslog stamp, which has no year).
		b.full = now
	}
	// Each record takes limitInterval out of the bucket; a record fits
	// while the bucket is less than limitBurst intervals from full.
	if b.full.Sub(now) > (limitBurst-1)*limitInterval {
		b.suppressed++
		lim.total.Add(1)
		return false, 0, other
	}
	if b.full.Before(now) {
		b.full = now
	}
	b.full = b.full.Add(limitInterval)
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed, other
}

// add enters a new cause, or returns nil if the table is full.
func (lim *limiter) add(key causeKey, now time.Time) *bucket {
	if lim.causes == nil {
		lim.causes = make(map[causeKey]*bucket)
	}
	// A bucket that is full again and owes no count behaves exactly like
	// a new one, so forgetting it changes nothing. A full table is swept
	// at most once an interval, since a bucket cannot refill faster.
	if len(lim.causes) >= maxCauses && !now.Before(lim.nextSweep) {
		lim.nextSweep = now.Add(limitInterval)
		for k, b := range lim.causes {
			if !b.full.After(now) && b.suppressed == 0 {
				delete(lim.causes, k)
			}
		}
	}
	if len(lim.causes) >= maxCauses {
		return nil
	}
	b := new(bucket)
	lim.causes[key] = b
	return b
}

// suppressedNote is appended to the record that follows suppressed ones,
// in Postfix's plain style, e.g. " (12 similar warnings suppressed)".
func suppressedNote(level int, n uint64, other bool) string {
	kind := "similar"
	if other {
		kind = "other"
	}
	noun := "warning"
	if level == levelError {
		noun = "error"
	}
	if n != 1 {
		noun += "s"
	}
	return " (" + strconv.FormatUint(n, 10) + " " + kind + " " + noun + " suppressed)"
}

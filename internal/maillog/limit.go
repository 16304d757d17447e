package maillog

import (
	"context"
	"fmt"
	"log/slog"
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
// program has a few dozen, and the keys of a few Causes; the bound only
// matters if a caller builds format strings from data, or logs messages
// made from data with slog's own methods (their message is their cause).
const maxCauses = 256

// A cause is the format string of the call: "request from %s exceeds the
// size limits ..." is one cause whatever the peer; or a Cause's Key
// (named), whatever its warnings say.
type causeKey struct {
	level  int
	format string
	named  bool
}

// bucket is a token bucket kept as the time at which it would be full
// again (the "theoretical arrival time" of GCRA): one field instead of a
// token count and a refill time, and exact integer arithmetic.
type bucket struct {
	full       time.Time
	suppressed uint64 // since the last record of this bucket was logged
}

// A Limiter is the rate limit of records: each Handler has one, and so
// does testlog's recorder. Its zero value is ready for use.
//
// By default, warnings and errors are limited per level and format string
// (limitBurst, then one per limitInterval), except those of WarnAlwaysf; a
// Cause's warnings have its own rule instead (Cause.Warnf). Info, debug,
// fatal and panic records are not limited.
type Limiter struct {
	// CausesOnly leaves warnings and errors that have no Cause alone:
	// only a Cause's rule applies.
	CausesOnly bool

	mu     sync.Mutex
	causes map[causeKey]*bucket
	// overflow is shared, per level, by the causes that found the table
	// full; its count is reported as "other" records, not "similar".
	overflow  [levelError - levelWarn + 1]bucket
	nextSweep time.Time
	total     atomic.Uint64
}

// Suppressed returns the number of warnings and errors that the default
// rule kept from the log. Those of a Cause are not counted: whoever logs
// them counts the events (replies refused, updates not shared...).
func (lim *Limiter) Suppressed() uint64 { return lim.total.Load() }

// Check decides whether r, handled with ctx, may be logged at now, by the
// tags the helpers (Warnf, Cause.Warnf...) put in ctx; a record without
// them is limited by its level and message. If r may be logged, note is
// what must end its text: how many records of its cause were suppressed
// before it, if any.
func (lim *Limiter) Check(ctx context.Context, r slog.Record, now time.Time) (note string, ok bool) {
	m, key := recordMeta(ctx, r)
	return lim.check(severity(r.Level), m, key, now)
}

// check decides on a record of severity sev with the tags m, whose cause
// for the default rule is key.
func (lim *Limiter) check(sev int, m meta, key string, now time.Time) (note string, ok bool) {
	switch {
	case m.cause != nil:
		c := m.cause
		ok, n, other := lim.allow(causeKey{levelWarn, c.Key, true}, c.burst(), c.Every, now, false)
		if ok && n > 0 {
			if other || c.Note == "" {
				note = suppressedNote(sev, n, other)
			} else {
				note = fmt.Sprintf(c.Note, n)
			}
		}
		if !ok {
			return "", false
		}
	case !m.always && !lim.CausesOnly && (sev == levelWarn || sev == levelError):
		ok, n, other := lim.allow(causeKey{sev, key, false}, limitBurst, limitInterval, now, true)
		if !ok {
			return "", false
		}
		if n > 0 {
			note = suppressedNote(sev, n, other)
		}
	}
	if c := m.covers; c != nil {
		lim.cover(causeKey{levelWarn, c.Key, true}, c.Every, now)
	}
	return note, true
}

func (c *Cause) burst() int {
	if c.Burst > 0 {
		return c.Burst
	}
	return 1
}

// allow decides whether a record of key may be logged at now, its bucket
// holding burst records and refilling one per every. If so, suppressed is
// the count of records of its bucket dropped since the last one logged,
// and other tells that the bucket is the shared overflow one. count adds
// a suppressed record to the total.
func (lim *Limiter) allow(key causeKey, burst int, every time.Duration, now time.Time, count bool) (ok bool, suppressed uint64, other bool) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	b := lim.causes[key]
	if b == nil {
		if b = lim.add(key, now); b == nil {
			// check asks only for levelWarn or levelError (a Cause
			// is keyed at levelWarn), so key.level indexes overflow.
			b, other = &lim.overflow[key.level-levelWarn], true
			burst, every = limitBurst, limitInterval
		}
	}
	if b.full.IsZero() {
		// New: full now, whatever the clock says (a test's may be set to
		// a syslog stamp, which has no year).
		b.full = now
	}
	// Each record takes every out of the bucket; a record fits while the
	// bucket is less than burst intervals from full.
	if b.full.Sub(now) > time.Duration(burst-1)*every {
		b.suppressed++
		if count || other {
			lim.total.Add(1)
		}
		return false, 0, other
	}
	if b.full.Before(now) {
		b.full = now
	}
	b.full = b.full.Add(every)
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed, other
}

// cover restarts the interval of a cause that a record just logged
// reports: its next record fits no sooner than every from now. The count
// of its suppressed records stays, for its next record to report.
func (lim *Limiter) cover(key causeKey, every time.Duration, now time.Time) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	b := lim.causes[key]
	if b == nil {
		if b = lim.add(key, now); b == nil {
			return
		}
	}
	if next := now.Add(every); b.full.Before(next) {
		b.full = next
	}
}

// add enters a new cause, or returns nil if the table is full.
func (lim *Limiter) add(key causeKey, now time.Time) *bucket {
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

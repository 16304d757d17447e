package maillog

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock advances by step at every reading, so that a flood spans a
// known stretch of time however the goroutines interleave.
type testClock struct {
	ns   atomic.Int64
	step time.Duration
}

func (c *testClock) now() time.Time {
	return fixedTime.Add(time.Duration(c.ns.Add(int64(c.step))) - c.step)
}

func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// limitedLogger logs to a buffer only, with the clock under test control.
func limitedLogger(t *testing.T, step time.Duration) (*testLog, *testClock, *lockedBuffer) {
	t.Helper()
	var buf lockedBuffer
	l := newTestLogger(t, Options{Stderr: &buf, Verbose: 1, Exit: func(int) {}})
	clock := &testClock{step: step}
	l.now = clock.now
	return l, clock, &buf
}

// texts returns the logged records without their time/host/pid header.
func texts(buf *lockedBuffer) []string {
	var out []string
	for line := range strings.Lines(buf.String()) {
		_, text, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "]: ")
		if !ok {
			panic("bad line " + line)
		}
		out = append(out, text)
	}
	return out
}

var noteRE = regexp.MustCompile(` \((\d+) (similar|other) (?:warning|error)s? suppressed\)$`)

// noted returns the suppressed count a record reports, or 0.
func noted(text string) uint64 {
	m := noteRE.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

func expectTexts(t *testing.T, buf *lockedBuffer, want ...string) {
	t.Helper()
	got := texts(buf)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
}

// Pins the numbers: a burst of 10, then one per 10 s, and the note on the
// record that follows suppressed ones.
func TestWarnRateLimit(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	var want []string
	for i := range 15 {
		Warnf(l.Logger, "w %d", i)
		if i < limitBurst {
			want = append(want, fmt.Sprintf("warning: w %d", i))
		}
	}
	if l.Suppressed() != 5 {
		t.Errorf("Suppressed() = %d, want 5", l.Suppressed())
	}
	clock.advance(limitInterval - 1)
	Warnf(l.Logger, "w %d", 15) // one nanosecond early
	clock.advance(1)
	Warnf(l.Logger, "w %d", 16)
	Warnf(l.Logger, "w %d", 17)
	clock.advance(limitInterval)
	Warnf(l.Logger, "w %d", 18)
	want = append(want,
		"warning: w 16 (6 similar warnings suppressed)",
		"warning: w 18 (1 similar warning suppressed)")
	expectTexts(t, buf, want...)

	// A bucket left alone refills to the full burst, and no further.
	clock.advance(100 * limitInterval)
	before := len(texts(buf))
	for i := range 2 * limitBurst {
		Warnf(l.Logger, "again %d", i)
		Warnf(l.Logger, "w %d", i)
	}
	if got := len(texts(buf)) - before; got != 2*limitBurst {
		t.Errorf("after a long pause %d records logged, want %d", got, 2*limitBurst)
	}
	if l.Suppressed() != 7+2*limitBurst {
		t.Errorf("Suppressed() = %d, want %d", l.Suppressed(), 7+2*limitBurst)
	}
}

const floodTotal, floodWriters = 100000, 8

// flood logs floodTotal warnings of one cause from floodWriters goroutines,
// each with its own peer, as conn.go does.
func flood(l *testLog, format string) {
	var wg sync.WaitGroup
	for w := range floodWriters {
		peer := fmt.Sprintf("192.0.2.%d", w)
		wg.Go(func() {
			for range floodTotal / floodWriters {
				Warnf(l.Logger, format, peer)
			}
		})
	}
	wg.Wait()
}

const floodFormat = "request from %s exceeds the size limits (100 bytes per attribute, 1000 per request)"

func TestWarnFloodFixedClock(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	flood(l, floodFormat)
	got := texts(buf)
	if len(got) != limitBurst {
		t.Fatalf("%d records logged, want %d", len(got), limitBurst)
	}
	for _, text := range got {
		if noted(text) != 0 {
			t.Errorf("record within the burst has a note: %q", text)
		}
	}
	if want := uint64(floodTotal - limitBurst); l.Suppressed() != want {
		t.Errorf("Suppressed() = %d, want %d", l.Suppressed(), want)
	}
	clock.advance(limitInterval)
	Warnf(l.Logger, floodFormat, "198.51.100.1")
	got = texts(buf)
	want := fmt.Sprintf("warning: request from 198.51.100.1 exceeds the size limits "+
		"(100 bytes per attribute, 1000 per request) (%d similar warnings suppressed)", floodTotal-limitBurst)
	if last := got[len(got)-1]; last != want {
		t.Errorf("next record\n got %q\nwant %q", last, want)
	}
}

// While time passes the bucket refills: no more than the burst plus one per
// interval gets through, and every warning is either logged or counted in
// exactly one note.
func TestWarnFloodAdvancingClock(t *testing.T) {
	const step = time.Millisecond
	l, clock, buf := limitedLogger(t, step)
	flood(l, floodFormat)
	elapsed := time.Duration(floodTotal-1) * step
	allowance := limitBurst + int(elapsed/limitInterval)
	logged := len(texts(buf))
	if logged > allowance || logged < allowance-1 {
		t.Errorf("%d records logged over %v, want %d (at least %d)", logged, elapsed, allowance, allowance-1)
	}
	clock.advance(limitInterval)
	Warnf(l.Logger, floodFormat, "198.51.100.1")
	var notes uint64
	got := texts(buf)
	for _, text := range got {
		notes += noted(text)
	}
	if notes != l.Suppressed() {
		t.Errorf("notes add up to %d, Suppressed() = %d", notes, l.Suppressed())
	}
	if total := uint64(len(got)-1) + l.Suppressed(); total != floodTotal {
		t.Errorf("logged %d + suppressed %d = %d, want %d", len(got)-1, l.Suppressed(), total, floodTotal)
	}
	if noted(got[len(got)-1]) == 0 {
		t.Errorf("record after the flood has no note: %q", got[len(got)-1])
	}
}

func TestSecondCauseUnaffected(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	var wg sync.WaitGroup
	wg.Go(func() { flood(l, floodFormat) })
	wg.Go(func() {
		for i := range limitBurst {
			Warnf(l.Logger, "timeout while waiting for data from %s", fmt.Sprint(i))
		}
	})
	wg.Wait()
	// Same format, other level: another cause, limited the same way.
	for range limitBurst + 1 {
		Errorf(l.Logger, floodFormat, "x")
	}

	var other, errors int
	for _, text := range texts(buf) {
		switch {
		case strings.HasPrefix(text, "warning: timeout"):
			other++
			if noted(text) != 0 {
				t.Errorf("second cause has a note: %q", text)
			}
		case strings.HasPrefix(text, "error: "):
			errors++
		}
	}
	if other != limitBurst || errors != limitBurst {
		t.Errorf("second cause logged %d times, error %d times; want %d each", other, errors, limitBurst)
	}

	// Each cause reports its own count.
	Warnf(l.Logger, "timeout while waiting for data from %s", "y") // over its burst
	clock.advance(limitInterval)
	Warnf(l.Logger, "timeout while waiting for data from %s", "z")
	Warnf(l.Logger, floodFormat, "z")
	Errorf(l.Logger, floodFormat, "z")
	got := texts(buf)
	got = got[len(got)-3:]
	if n := noted(got[0]); n != 1 || !strings.HasPrefix(got[0], "warning: timeout") {
		t.Errorf("second cause: %q, want a note of 1", got[0])
	}
	if n := noted(got[1]); n != floodTotal-limitBurst {
		t.Errorf("flooded cause: %q, want a note of %d", got[1], floodTotal-limitBurst)
	}
	if !strings.HasSuffix(got[2], "(1 similar error suppressed)") {
		t.Errorf("error: %q, want a note of 1", got[2])
	}
}

// Info and Debug are the logging the operator asked for; Fatal and panicf
// end the process; WarnAlways is the explicit exception.
func TestUnlimitedLevels(t *testing.T) {
	l, _, buf := limitedLogger(t, 0)
	const n = 1000
	for range limitBurst + 1 {
		Warnf(l.Logger, "shared %s", "w")
	}
	var wg sync.WaitGroup
	for _, f := range []func(){
		func() { Infof(l.Logger, "shared %s", "i") },
		func() { Debugf(l.Logger, 1, "shared %s", "d") },
		func() { WarnAlwaysf(l.Logger, "shared %s", "a") },
		func() { Fatalf(l.Logger, "shared %s", "f") },
		func() { panicf(l.Logger, "shared %s", "p") },
	} {
		wg.Go(func() {
			for range n {
				f()
			}
		})
	}
	wg.Wait()
	count := map[string]int{}
	for _, text := range texts(buf) {
		count[text]++
	}
	for _, text := range []string{"shared i", "shared d", "warning: shared a", "fatal: shared f", "panic: shared p"} {
		if count[text] != n {
			t.Errorf("%q logged %d times, want %d", text, count[text], n)
		}
	}
	if count["warning: shared w"] != limitBurst || l.Suppressed() != 1 {
		t.Errorf("Warn logged %d times, %d suppressed; want %d and 1",
			count["warning: shared w"], l.Suppressed(), limitBurst)
	}
}

// A cause table that is full sends new causes to a shared overflow bucket,
// whose note says "other"; causes idle long enough make room again, unless
// they still owe a note.
func TestCauseTableBound(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	for range limitBurst + 1 {
		Warnf(l.Logger, "owed %s", "x")
	}
	const distinct = 1000
	for i := range distinct {
		format := fmt.Sprintf("cause %d: %%s", i)
		Warnf(l.Logger, format, "x")
		Warnf(l.Logger, format, "y") // so that no bucket is full again one interval later
	}
	if len(l.limit.causes) != maxCauses {
		t.Errorf("%d causes in the table, want %d", len(l.limit.causes), maxCauses)
	}
	own := maxCauses - 1
	overflowed := 2 * (distinct - own)
	if got, want := len(texts(buf)), limitBurst+2*own+limitBurst; got != want {
		t.Errorf("%d records logged, want %d", got, want)
	}
	if want := uint64(1 + overflowed - limitBurst); l.Suppressed() != want {
		t.Errorf("Suppressed() = %d, want %d", l.Suppressed(), want)
	}

	clock.advance(limitInterval)
	Warnf(l.Logger, "late %s", "x")
	got := texts(buf)
	want := fmt.Sprintf("warning: late x (%d other warnings suppressed)", overflowed-limitBurst)
	if last := got[len(got)-1]; last != want {
		t.Errorf("overflow record\n got %q\nwant %q", last, want)
	}
	if len(l.limit.causes) != maxCauses {
		t.Errorf("%d causes in the table, want %d", len(l.limit.causes), maxCauses)
	}

	// Now every bucket is full again; all but one owe nothing: forgotten.
	clock.advance(limitBurst * limitInterval)
	Warnf(l.Logger, "later %s", "x")
	if len(l.limit.causes) != 2 || l.limit.causes[causeKey{levelWarn, "later %s", false}] == nil {
		t.Errorf("table after the idle causes expired: %d causes", len(l.limit.causes))
	}
	Warnf(l.Logger, "owed %s", "y")
	got = texts(buf)
	if want := []string{"warning: later x", "warning: owed y (1 similar warning suppressed)"}; strings.Join(got[len(got)-2:], "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got[len(got)-2:], want)
	}
}

// The note is kept whole at the length limit; the text gives way.
func TestNoteSurvivesTruncation(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	long := strings.Repeat("\u00e9", MaxTextLen) // two bytes each
	for range limitBurst + 1 {
		Warnf(l.Logger, "%s", long)
	}
	clock.advance(limitInterval)
	Warnf(l.Logger, "%s", long)
	got := texts(buf)
	last := strings.TrimPrefix(got[len(got)-1], "warning: ")
	note := " (1 similar warning suppressed)"
	if !strings.HasSuffix(last, note) || len(last) > MaxTextLen || len(last) < MaxTextLen-1 {
		t.Errorf("record of %d bytes ends %q", len(last), last[max(0, len(last)-40):])
	}
	if !strings.HasPrefix(last, strings.Repeat("\u00e9", (len(last)-len(note))/2)) {
		t.Error("text cut inside a character")
	}
}

// BenchmarkWarn measures the cost of the limiter: a suppressed warning (a
// flood) and a logged one, next to Info, which skips the limiter.
func BenchmarkWarn(b *testing.B) {
	newLogger := func(b *testing.B, step time.Duration) *testLog {
		h, err := New(Options{Tag: "postfix/tlsmgr", Hostname: "mail", Stderr: io.Discard})
		if err != nil {
			b.Fatal(err)
		}
		clock := &testClock{step: step}
		h.now = clock.now
		return &testLog{h, slog.New(h)}
	}
	b.Run("suppressed", func(b *testing.B) {
		l := newLogger(b, 0)
		for b.Loop() {
			Warnf(l.Logger, floodFormat, "192.0.2.1")
		}
	})
	b.Run("suppressed-parallel", func(b *testing.B) {
		l := newLogger(b, 0)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				Warnf(l.Logger, floodFormat, "192.0.2.1")
			}
		})
	})
	b.Run("logged", func(b *testing.B) {
		l := newLogger(b, limitInterval)
		for b.Loop() {
			Warnf(l.Logger, floodFormat, "192.0.2.1")
		}
	})
	b.Run("info", func(b *testing.B) {
		l := newLogger(b, 0)
		for b.Loop() {
			Infof(l.Logger, floodFormat, "192.0.2.1")
		}
	})
}

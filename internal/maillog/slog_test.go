package maillog

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Records made by slog's own methods, not the helpers: the message is the
// text, the attributes follow it, and warnings are limited per message.
func TestSlogMethods(t *testing.T) {
	l, _, buf := limitedLogger(t, 0)
	l.Info("plain")
	l.Warn("w", "peer", "192.0.2.1", "n", 3)
	l.Error("e", slog.Group("g", "k", "v"))
	l.With("a", "b c").WithGroup("grp").Info("x", "k", "", "q", `say "hi"`)
	l.Debug("at -v")
	Warnf(l.With("conn", 7), "helper %d", 1)
	expectTexts(t, buf,
		"plain",
		"warning: w peer=192.0.2.1 n=3",
		`error: e g.k=v`,
		`x a="b c" grp.k="" grp.q="say \"hi\""`,
		"at -v",
		"warning: helper 1 conn=7")

	buf.buf.Reset()
	for range limitBurst + 1 {
		l.Warn("same message")
	}
	if got := len(texts(buf)); got != limitBurst {
		t.Errorf("%d of %d warnings of one message logged, want %d", got, limitBurst+1, limitBurst)
	}
}

func TestVerboseLevels(t *testing.T) {
	for v, want := range map[int]slog.Level{-1: LevelInfo, 0: LevelInfo, 1: slog.LevelDebug, 2: slog.LevelDebug - 1, 3: slog.LevelDebug - 2} {
		if got := VerboseLevel(v); got != want {
			t.Errorf("VerboseLevel(%d) = %v, want %v", v, got, want)
		}
	}
	if !(LevelPanic > LevelFatal && LevelFatal > LevelError) {
		t.Errorf("levels out of order: error %v, fatal %v, panic %v", LevelError, LevelFatal, LevelPanic)
	}
	var buf lockedBuffer
	l := newTestLogger(t, Options{Stderr: &buf, Verbose: 2})
	for v := range 4 {
		Debugf(l.Logger, v, "debug %d", v)
	}
	l.Debug("slog debug")
	l.Log(context.Background(), slog.LevelDebug-2, "too verbose")
	expectTexts(t, &buf, "debug 0", "debug 1", "debug 2", "slog debug")

	quiet := newTestLogger(t, Options{Stderr: &buf, Verbose: 0})
	if quiet.Handler.Enabled(context.Background(), slog.LevelDebug) || !quiet.Handler.Enabled(context.Background(), LevelInfo) {
		t.Error("without -v, debug enabled or info not")
	}
}

// A Cause has its own rule and note; its suppressed warnings are not in
// Suppressed, and the default limit of the same format string is not
// touched.
func TestCause(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	c := &Cause{Key: "refusals", Every: 10 * time.Second, Note: " (%d more refused since the last report)"}
	const format = "reply from %s refused"
	for i := range 5 {
		c.Warnf(l.Logger, format, string(rune('a'+i)))
	}
	for range limitBurst {
		Warnf(l.Logger, format, "z")
	}
	clock.advance(10*time.Second - 1)
	c.Warnf(l.Logger, format, "early")
	clock.advance(1)
	c.Warnf(l.Logger, format, "f")
	want := []string{"warning: reply from a refused"}
	for range limitBurst {
		want = append(want, "warning: reply from z refused")
	}
	want = append(want, "warning: reply from f refused (5 more refused since the last report)")
	expectTexts(t, buf, want...)
	if l.Suppressed() != 0 {
		t.Errorf("Suppressed() = %d, want 0: a Cause's warnings are counted by their logger", l.Suppressed())
	}

	// Another key, another limit; a Burst of 3; the default note.
	d := &Cause{Key: "other", Burst: 3, Every: time.Minute}
	buf.buf.Reset()
	for range 4 {
		d.Warnf(l.Logger, format, "d")
	}
	clock.advance(time.Minute)
	d.Warnf(l.Logger, format, "d")
	expectTexts(t, buf, "warning: reply from d refused", "warning: reply from d refused", "warning: reply from d refused",
		"warning: reply from d refused (1 similar warning suppressed)")
}

// A line of its own that reports a cause restarts the cause's interval,
// keeping the count of what it suppressed for its next line.
func TestCoverf(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	c := &Cause{Key: "unshared", Every: 10 * time.Second, Note: "; %d more not shared since the last report"}
	c.Warnf(l.Logger, "update %d not shared", 1)
	c.Warnf(l.Logger, "update %d not shared", 2) // suppressed
	clock.advance(9 * time.Second)
	c.Coverf(l.Logger, "the write queue is full")
	clock.advance(9 * time.Second) // 18 s after the first, 9 after the report
	c.Warnf(l.Logger, "update %d not shared", 3)
	clock.advance(time.Second)
	c.Warnf(l.Logger, "update %d not shared", 4)
	// Covering a cause not seen yet holds its first line back too.
	e := &Cause{Key: "new", Every: time.Second}
	e.Coverf(l.Logger, "why")
	e.Warnf(l.Logger, "new %d", 1)
	expectTexts(t, buf,
		"warning: update 1 not shared",
		"warning: the write queue is full",
		"warning: update 4 not shared; 2 more not shared since the last report",
		"warning: why")
}

// The limiter on its own, as testlog uses it: records without a Cause are
// left alone with CausesOnly, limited by message otherwise.
func TestLimiterCheck(t *testing.T) {
	rec := func(level slog.Level, msg string) slog.Record {
		return slog.NewRecord(fixedTime, level, msg, 0)
	}
	var lim Limiter
	only := Limiter{CausesOnly: true}
	var logged, onlyLogged int
	for range limitBurst + 2 {
		if _, ok := lim.Check(context.Background(), rec(LevelWarn, "m"), fixedTime); ok {
			logged++
		}
		if _, ok := only.Check(context.Background(), rec(LevelWarn, "m"), fixedTime); ok {
			onlyLogged++
		}
		if _, ok := lim.Check(context.Background(), rec(LevelInfo, "m"), fixedTime); !ok {
			t.Fatal("info record limited")
		}
	}
	if logged != limitBurst || lim.Suppressed() != 2 || onlyLogged != limitBurst+2 || only.Suppressed() != 0 {
		t.Errorf("logged %d (suppressed %d), causes only %d (suppressed %d)", logged, lim.Suppressed(), onlyLogged, only.Suppressed())
	}
	note, ok := lim.Check(context.Background(), rec(LevelWarn, "m"), fixedTime.Add(limitInterval))
	if !ok || note != " (2 similar warnings suppressed)" {
		t.Errorf("after the interval: %q, %v", note, ok)
	}
}

// Fatal and panic records end the process after they are written,
// whether the helpers or slog's Log made them.
func TestFatalThroughSlog(t *testing.T) {
	var buf lockedBuffer
	var codes []int
	l := newTestLogger(t, Options{Stderr: &buf, Exit: func(c int) { codes = append(codes, c) }})
	l.Log(context.Background(), LevelFatal, "f")
	l.Log(context.Background(), LevelPanic, "p")
	Fatalf(l.Logger, "f %d", 2)
	expectTexts(t, &buf, "fatal: f", "panic: p", "fatal: f 2")
	if len(codes) != 3 || codes[0] != 1 || codes[1] != 2 || codes[2] != 1 {
		t.Errorf("exit codes %v, want [1 2 1]", codes)
	}
}

// A nil logger discards, through the helpers and OrDiscard.
func TestNilLogger(t *testing.T) {
	Infof(nil, "x")
	Warnf(nil, "x")
	c := &Cause{Key: "k", Every: time.Second}
	c.Warnf(nil, "x")
	l := OrDiscard(nil)
	l.Warn("x")
	if l.Enabled(context.Background(), LevelPanic) {
		t.Error("OrDiscard(nil) enabled")
	}
	if own := slog.New(slog.DiscardHandler); OrDiscard(own) != own {
		t.Error("OrDiscard replaced a logger")
	}
}

// Through another handler, the helpers' records carry the formatted text
// as their message, and nothing of the tags the Handler consumes: a user
// of slog's own handlers sees no trace of them, whatever the logger's
// attributes and groups.
func TestHelpersThroughOtherHandler(t *testing.T) {
	c := &Cause{Key: "k", Every: time.Second}
	logAll := func(l *slog.Logger) {
		Warnf(l, "peer %s", "192.0.2.1")
		c.Warnf(l.With("conn", 7), "cause %d", 1)
		Infof(l.WithGroup("g"), "in %s", "group")
		c.Coverf(l.WithGroup("g").With("k", "v"), "covers")
	}

	var b strings.Builder
	logAll(slog.New(slog.NewTextHandler(&b, nil)))
	want := []string{
		`level=WARN msg="peer 192.0.2.1"`,
		`level=WARN msg="cause 1" conn=7`,
		`level=INFO msg="in group"`,
		`level=WARN msg=covers g.k=v`,
	}
	var got []string
	for line := range strings.Lines(b.String()) {
		stamp, rest, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if !strings.HasPrefix(stamp, "time=") {
			t.Errorf("line without time: %q", line)
		}
		got = append(got, rest)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("text handler wrote\n%s\nwant (after the time)\n%s", b.String(), strings.Join(want, "\n"))
	}

	b.Reset()
	logAll(slog.New(slog.NewJSONHandler(&b, nil)))
	wantJSON := []map[string]any{
		{"level": "WARN", "msg": "peer 192.0.2.1"},
		{"level": "WARN", "msg": "cause 1", "conn": 7.0},
		{"level": "INFO", "msg": "in group"},
		{"level": "WARN", "msg": "covers", "g": map[string]any{"k": "v"}},
	}
	lines := slices.Collect(strings.Lines(b.String()))
	if len(lines) != len(wantJSON) {
		t.Fatalf("JSON handler wrote %d lines, want %d:\n%s", len(lines), len(wantJSON), b.String())
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d: %v: %q", i, err, line)
		}
		if _, ok := rec["time"].(string); !ok {
			t.Errorf("line %d without time: %q", i, line)
		}
		delete(rec, "time")
		if !reflect.DeepEqual(rec, wantJSON[i]) {
			t.Errorf("line %d is %q, want %v without the time", i, line, wantJSON[i])
		}
	}
}

// countingValue counts how often a handler resolves it: how often a record
// carrying it was rendered.
type countingValue struct{ n *atomic.Int64 }

func (v countingValue) LogValue() slog.Value {
	v.n.Add(1)
	return slog.StringValue("x")
}

// A record of slog's own methods is rendered only if its rate limit lets
// it through: one that is suppressed costs no formatting.
func TestSuppressedNotRendered(t *testing.T) {
	l, _, buf := limitedLogger(t, 0)
	var n atomic.Int64
	for range limitBurst + 5 {
		l.Warn("same message", "v", countingValue{&n})
	}
	if got := n.Load(); got != limitBurst {
		t.Errorf("attribute resolved %d times for %d records written", got, limitBurst)
	}
	if got := len(texts(buf)); got != limitBurst {
		t.Errorf("%d records written, want %d", got, limitBurst)
	}
}

// wrapper is a handler of another package around a Handler: the helpers
// then go through Handle, not printf.
type wrapper struct{ slog.Handler }

// Through a wrapper, a helper's record is still limited by its format
// string (and its Cause), and its tags are not written.
func TestHelpersThroughWrapper(t *testing.T) {
	l, clock, buf := limitedLogger(t, 0)
	w := slog.New(wrapper{l.Handler})
	for i := range limitBurst + 2 {
		Warnf(w, "peer %d", i)
	}
	c := &Cause{Key: "k", Every: time.Second}
	c.Warnf(w.With("conn", 7), "cause %d", 1)
	c.Warnf(w, "cause %d", 2)
	clock.advance(time.Second)
	c.Warnf(w, "cause %d", 3)
	var want []string
	for i := range limitBurst {
		want = append(want, "warning: peer "+strconv.Itoa(i))
	}
	want = append(want, "warning: cause 1 conn=7", "warning: cause 3 (1 similar warning suppressed)")
	expectTexts(t, buf, want...)
	if l.Suppressed() != 2 {
		t.Errorf("Suppressed() = %d, want 2", l.Suppressed())
	}
}

func TestLevelName(t *testing.T) {
	for level, want := range map[slog.Level]string{
		VerboseLevel(2): "debug", LevelDebug: "debug", LevelInfo - 1: "debug",
		LevelInfo: "info", LevelWarn - 1: "info",
		LevelWarn: "warn", LevelError: "error", LevelFatal: "fatal",
		LevelPanic: "panic", LevelPanic + 4: "panic",
	} {
		if got := LevelName(level); got != want {
			t.Errorf("LevelName(%v) = %q, want %q", level, got, want)
		}
	}
}

package maillog

import (
	"context"
	"log/slog"
	"strings"
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
		if _, ok := lim.Check(rec(LevelWarn, "m"), fixedTime); ok {
			logged++
		}
		if _, ok := only.Check(rec(LevelWarn, "m"), fixedTime); ok {
			onlyLogged++
		}
		if _, ok := lim.Check(rec(LevelInfo, "m"), fixedTime); !ok {
			t.Fatal("info record limited")
		}
	}
	if logged != limitBurst || lim.Suppressed() != 2 || onlyLogged != limitBurst+2 || only.Suppressed() != 0 {
		t.Errorf("logged %d (suppressed %d), causes only %d (suppressed %d)", logged, lim.Suppressed(), onlyLogged, only.Suppressed())
	}
	note, ok := lim.Check(rec(LevelWarn, "m"), fixedTime.Add(limitInterval))
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
// as their message.
func TestHelpersThroughOtherHandler(t *testing.T) {
	var b strings.Builder
	l := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == metaKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	Warnf(l, "peer %s", "192.0.2.1")
	if got, want := b.String(), "level=WARN msg=\"peer 192.0.2.1\"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Package testlog is the recording logger of the tests: a slog handler
// that keeps every line logged through Recorder.Logger, and checks them
// against a list.
package testlog

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

// Line is one logged line: its level ("debug", "info", "warn", "error",
// "fatal" or "panic") and its text.
type Line struct{ Level, Text string }

// Recorder records lines; safe for concurrent use. Its zero value is
// ready for use.
//
// It applies the rate limits of a maillog.Cause, as the daemon's log
// does, with a clock of its own (Elapse), but not the default limit of
// warnings: a test sees every warning logged.
type Recorder struct {
	mu    sync.Mutex
	lines []Line
	limit *maillog.Limiter // nil until used
	skew  time.Duration    // added to the time, for the limits
}

// Logger returns a logger whose records l keeps, at every level down to
// any -v level: a line's text is the record's message (and the note of a
// Cause's rate limit); attributes are not kept.
func (l *Recorder) Logger() *slog.Logger { return slog.New(handler{l}) }

// handler is the slog.Handler of a Recorder.
type handler struct{ l *Recorder }

func (handler) Enabled(context.Context, slog.Level) bool { return true }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	l := h.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == nil {
		l.limit = &maillog.Limiter{CausesOnly: true}
	}
	note, ok := l.limit.Check(ctx, r, time.Now().Add(l.skew))
	if ok {
		l.lines = append(l.lines, Line{maillog.LevelName(r.Level), r.Message + note})
	}
	return nil
}

func (h handler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h handler) WithGroup(string) slog.Handler      { return h }

// Reset forgets the lines logged so far, and the state of the rate
// limits: a Cause's next warning is logged.
func (l *Recorder) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = nil
	l.limit = nil
}

// Elapse moves the rate limits' clock d on, as if that much time had
// passed since.
func (l *Recorder) Elapse(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.skew += d
}

// Lines returns the lines logged so far.
func (l *Recorder) Lines() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// String returns the lines logged so far, one a line, as Postfix logs
// them: a warning after "warning: " (an error, fatal or panic line after
// its own prefix), a debug line after "debug: ", an info line as it is.
func (l *Recorder) String() string {
	var b strings.Builder
	for i, ln := range l.Lines() {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(prefix(ln.Level))
		b.WriteString(ln.Text)
	}
	return b.String()
}

// prefix is what String puts before the text of a line of the level (a
// maillog.LevelName).
func prefix(level string) string {
	switch level {
	case "warn":
		return "warning: "
	case "info":
		return ""
	}
	return level + ": "
}

// Has reports whether String contains s.
func (l *Recorder) Has(s string) bool { return strings.Contains(l.String(), s) }

// Count returns how many lines of the level, or of any level when level
// is "", have a text that contains s.
func (l *Recorder) Count(level, s string) int {
	n := 0
	for _, ln := range l.Lines() {
		if (level == "" || ln.Level == level) && strings.Contains(ln.Text, s) {
			n++
		}
	}
	return n
}

// WaitFor polls for up to 5 s until Has(s), and fails the test if that
// never happens.
func (l *Recorder) WaitFor(t testing.TB, s string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l.Has(s) {
			return
		}
	}
	t.Fatalf("log never showed %q; log:\n%s", s, l.String())
}

// Want checks the lines logged so far: one per entry of want, each entry
// the level and then fragments the line must contain.
func (l *Recorder) Want(t testing.TB, want ...[]string) {
	t.Helper()
	got := l.Lines()
	if len(got) != len(want) {
		t.Fatalf("logged %d lines, want %d: %q", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Level != w[0] {
			t.Errorf("line %d is %s, want %s: %q", i, got[i].Level, w[0], got[i].Text)
		}
		for _, frag := range w[1:] {
			if !strings.Contains(got[i].Text, frag) {
				t.Errorf("line %d lacks %q: %q", i, frag, got[i].Text)
			}
		}
	}
}

// FailOnWarn returns a logger for a test that expects no warning: a line
// at LevelWarn or above fails tb, one below is dropped.
func FailOnWarn(tb testing.TB) *slog.Logger { return slog.New(tbHandler{tb, true}) }

// TB returns a logger that writes each line to tb.Logf, with its prefix
// as in String.
func TB(tb testing.TB) *slog.Logger { return slog.New(tbHandler{tb, false}) }

type tbHandler struct {
	tb   testing.TB
	fail bool
}

func (h tbHandler) Enabled(_ context.Context, level slog.Level) bool {
	return !h.fail || level >= maillog.LevelWarn
}

func (h tbHandler) Handle(_ context.Context, r slog.Record) error {
	h.tb.Helper()
	line := prefix(maillog.LevelName(r.Level)) + r.Message
	if h.fail {
		h.tb.Errorf("unexpected %s", line)
	} else {
		h.tb.Logf("%s", line)
	}
	return nil
}

func (h tbHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h tbHandler) WithGroup(string) slog.Handler      { return h }

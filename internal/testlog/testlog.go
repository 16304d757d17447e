// Package testlog is the recording logger of the tests: it keeps every
// Info, Warn and Debug line, and checks them against a list.
package testlog

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Line is one logged line.
type Line struct{ Level, Text string }

// Recorder records lines; safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	lines []Line
}

func (l *Recorder) Info(f string, a ...any) { l.add("info", f, a...) }
func (l *Recorder) Warn(f string, a ...any) { l.add("warn", f, a...) }

// Debug records a line of level "debug", whatever its verbosity level.
func (l *Recorder) Debug(_ int, f string, a ...any) { l.add("debug", f, a...) }

func (l *Recorder) add(level, f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, Line{level, fmt.Sprintf(f, a...)})
}

// Reset forgets the lines logged so far.
func (l *Recorder) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = nil
}

// Lines returns the lines logged so far.
func (l *Recorder) Lines() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// String returns the lines logged so far, one a line, as Postfix logs
// them: a warning after "warning: ", a debug line after "debug: ", an
// info line as it is.
func (l *Recorder) String() string {
	var b strings.Builder
	for i, ln := range l.Lines() {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch ln.Level {
		case "warn":
			b.WriteString("warning: ")
		case "debug":
			b.WriteString("debug: ")
		}
		b.WriteString(ln.Text)
	}
	return b.String()
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

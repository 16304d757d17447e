// Package testlog is the recording logger of the tests: it keeps every
// Info and Warn line, and checks them against a list.
package testlog

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
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

func (l *Recorder) add(level, f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, Line{level, fmt.Sprintf(f, a...)})
}

// Lines returns the lines logged so far.
func (l *Recorder) Lines() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// String returns the lines logged so far, one a line, as Postfix logs
// them: a warning after "warning: ", an info line as it is.
func (l *Recorder) String() string {
	var b strings.Builder
	for i, ln := range l.Lines() {
		if i > 0 {
			b.WriteByte('\n')
		}
		if ln.Level == "warn" {
			b.WriteString("warning: ")
		}
		b.WriteString(ln.Text)
	}
	return b.String()
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

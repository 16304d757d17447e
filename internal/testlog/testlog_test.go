package testlog

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	var l Recorder
	if s := l.String(); s != "" {
		t.Fatalf("String of nothing logged = %q", s)
	}
	l.Warn("cannot %s", "open")
	l.Info("open again after %d s", 3)
	if s, want := l.String(), "warning: cannot open\nopen again after 3 s"; s != want {
		t.Fatalf("String = %q, want %q", s, want)
	}
	if got := l.Lines(); len(got) != 2 || got[0] != (Line{"warn", "cannot open"}) || got[1] != (Line{"info", "open again after 3 s"}) {
		t.Fatalf("Lines = %q", got)
	}
	l.Want(t, []string{"warn", "cannot", "open"}, []string{"info", "again"})
}

func TestRecorderDebug(t *testing.T) {
	var l Recorder
	l.Info("connect from %s", "a")
	l.Debug(1, "received master trigger from %s", "b")
	l.Warn("bogus cache type %q", "c")
	want := "connect from a\ndebug: received master trigger from b\nwarning: bogus cache type \"c\""
	if s := l.String(); s != want {
		t.Fatalf("String = %q, want %q", s, want)
	}
	l.Want(t, []string{"info", "connect"}, []string{"debug", "master trigger"}, []string{"warn", "bogus"})
}

func TestRecorderHasCount(t *testing.T) {
	var l Recorder
	if l.Has("refresh") {
		t.Error("Has of nothing logged is true")
	}
	l.Warn("cannot refresh the fleet ring")
	l.Info("fleet ring refreshed again")
	l.Warn("cannot refresh the fleet ring")
	l.Debug(2, "refresh")
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"warning: cannot refresh", true},
		{"refreshed again", true},
		{"debug: refresh", true},
		{"warning: fleet ring refreshed", false},
		{"info:", false},
	} {
		if got := l.Has(c.s); got != c.want {
			t.Errorf("Has(%q) = %v, want %v", c.s, got, c.want)
		}
	}
	for _, c := range []struct {
		level, s string
		want     int
	}{
		{"", "refresh", 4},
		{"", "", 4},
		{"warn", "", 2},
		{"warn", "cannot refresh", 2},
		{"info", "cannot refresh", 0},
		{"info", "refreshed again", 1},
		{"debug", "refresh", 1},
		{"warn", "warning:", 0}, // the text, not the rendered line
	} {
		if got := l.Count(c.level, c.s); got != c.want {
			t.Errorf("Count(%q, %q) = %d, want %d", c.level, c.s, got, c.want)
		}
	}
}

func TestRecorderWaitFor(t *testing.T) {
	var l Recorder
	go func() {
		time.Sleep(50 * time.Millisecond)
		l.Warn("timeout while waiting for data")
	}()
	l.WaitFor(t, "warning: timeout while")
}

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper()                   {}
func (f *fatalTB) Fatalf(s string, a ...any) { f.msg = fmt.Sprintf(s, a...) }

func TestRecorderWaitForFails(t *testing.T) {
	t.Parallel()
	var l Recorder
	l.Info("something else")
	tb := &fatalTB{TB: t}
	start := time.Now()
	l.WaitFor(tb, "never")
	if d := time.Since(start); d < 5*time.Second {
		t.Errorf("WaitFor gave up after %v, want 5 s", d)
	}
	if !strings.Contains(tb.msg, `"never"`) || !strings.Contains(tb.msg, "something else") {
		t.Errorf("WaitFor failed with %q", tb.msg)
	}
}

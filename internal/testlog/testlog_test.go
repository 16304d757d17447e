package testlog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

func TestRecorder(t *testing.T) {
	var l Recorder
	if s := l.String(); s != "" {
		t.Fatalf("String of nothing logged = %q", s)
	}
	maillog.Warnf(l.Logger(), "cannot %s", "open")
	maillog.Infof(l.Logger(), "open again after %d s", 3)
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
	maillog.Infof(l.Logger(), "connect from %s", "a")
	maillog.Debugf(l.Logger(), 1, "received master trigger from %s", "b")
	maillog.Warnf(l.Logger(), "bogus cache type %q", "c")
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
	maillog.Warnf(l.Logger(), "cannot refresh the fleet ring")
	maillog.Infof(l.Logger(), "fleet ring refreshed again")
	maillog.Warnf(l.Logger(), "cannot refresh the fleet ring")
	maillog.Debugf(l.Logger(), 2, "refresh")
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
		maillog.Warnf(l.Logger(), "timeout while waiting for data")
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
	maillog.Infof(l.Logger(), "something else")
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

// The limit of a Cause applies, with the recorder's clock; the default
// limit of warnings does not.
func TestRecorderLimits(t *testing.T) {
	var l Recorder
	log := l.Logger()
	c := &maillog.Cause{Key: "test", Every: 10 * time.Second, Note: " (%d more)"}
	for i := range 3 {
		c.Warnf(log, "refused %d", i)
	}
	for i := range 20 {
		maillog.Warnf(log, "same %d", i)
	}
	if n := l.Count("warn", "refused"); n != 1 {
		t.Errorf("%d lines of the cause, want 1: %q", n, l.Lines())
	}
	if n := l.Count("warn", "same"); n != 20 {
		t.Errorf("%d warnings of one format, want all 20", n)
	}
	l.Elapse(10 * time.Second)
	c.Warnf(log, "refused %d", 3)
	if !l.Has("warning: refused 3 (2 more)") {
		t.Errorf("no line after the interval with the count: %q", l.Lines())
	}
	c.Warnf(log, "refused %d", 4)
	l.Reset()
	c.Warnf(log, "refused %d", 5)
	l.Want(t, []string{"warn", "refused 5"})
	maillog.Errorf(log, "e")
	maillog.Fatalf(log, "f")
	if s := l.String(); s != "warning: refused 5\nerror: e\nfatal: f" {
		t.Errorf("String = %q", s)
	}
}

package testlog

import "testing"

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

package version

import "testing"

func TestString(t *testing.T) {
	if String() == "" {
		t.Fatal("String() is empty")
	}
	old := Version
	defer func() { Version = old }()
	Version = "1.2.3"
	if got := String(); got != "1.2.3" {
		t.Errorf("String() = %q with Version set, want 1.2.3", got)
	}
}

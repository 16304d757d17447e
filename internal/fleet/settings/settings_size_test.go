package settings

import (
	"fmt"
	"strings"
	"testing"
)

// A settings file of maxSettingsSize bytes is read whole; one byte more is
// refused, not cut short: its last settings are never silently dropped.
func TestSettingsFileSizeLimit(t *testing.T) {
	f := newFixture(t)
	settingsOf := func(size int) string {
		tail := "servers = r:1\nseal_key_file = " + f.keyFile + "\n"
		pad := size - len(tail)
		var b strings.Builder
		for pad > 0 {
			n := min(pad, 80)
			b.WriteString("#" + strings.Repeat("x", n-2) + "\n")
			pad -= n
		}
		text := b.String() + tail
		if len(text) != size {
			t.Fatalf("made %d bytes, want %d", len(text), size)
		}
		return text
	}
	if s := f.load(t, settingsOf(maxSettingsSize)); len(s.Servers) != 1 || len(s.SealKeys) != 2 {
		t.Errorf("a file of %d bytes: %v", maxSettingsSize, s)
	}
	want := fmt.Sprintf("@DIR@/tlsmgr-redis.cf: larger than %d bytes; is this the right file?", maxSettingsSize)
	for _, size := range []int{maxSettingsSize + 1, maxSettingsSize + 4096} {
		if got := f.loadErr(t, settingsOf(size)); got != want {
			t.Errorf("a file of %d bytes:\n got %s\nwant %s", size, got, want)
		}
	}
}

package gotls

import "testing"

// TestRecentBounded: past recentLen entries each new one pushes an old
// one out, wiped; a replaced value is wiped, a taken one is not, a
// forgotten one is.
func TestRecentBounded(t *testing.T) {
	wiped := 0
	r := recent[int, int]{wipe: func(int) { wiped++ }}
	for i := range recentLen + 10 {
		r.put(i, i)
	}
	if len(r.m) != recentLen || wiped != 10 {
		t.Fatalf("%d entries, %d wiped; want %d, 10", len(r.m), wiped, recentLen)
	}
	k := recentLen + 9 // the last one put is always there
	r.put(k, -1)
	if wiped != 11 || !r.holds(k, func(v int) bool { return v == -1 }) {
		t.Fatalf("replacing: %d wiped, holds -1 %v", wiped, r.holds(k, func(v int) bool { return v == -1 }))
	}
	if v, ok := r.take(k); !ok || v != -1 || wiped != 11 {
		t.Fatalf("take = %d, %v; %d wiped", v, ok, wiped)
	}
	if _, ok := r.take(k); ok || r.holds(k, func(int) bool { return true }) {
		t.Fatal("a taken entry is still there")
	}
	for k := range r.m {
		r.forget(k)
		break
	}
	if wiped != 12 || len(r.m) != recentLen-2 {
		t.Fatalf("forget: %d wiped, %d entries", wiped, len(r.m))
	}
}

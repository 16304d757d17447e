package server

import "testing"

// TestMaxBlockingCapped: MaxBlocking is cut to blockingCap, well below the
// runtime's limit of 10000 threads, whatever the configuration asks; zero
// means the default.
func TestMaxBlockingCapped(t *testing.T) {
	for _, tc := range []struct{ set, want int }{
		{0, DefaultMaxBlocking},
		{-1, DefaultMaxBlocking},
		{10, 10},
		{blockingCap, blockingCap},
		{blockingCap + 1, blockingCap},
		{20000, blockingCap},
	} {
		if got := New(Config{MaxBlocking: tc.set}).cfg.MaxBlocking; got != tc.want {
			t.Errorf("MaxBlocking %d: %d, want %d", tc.set, got, tc.want)
		}
	}
}

package gotls

import (
	"testing"
	"time"
)

// TestClientCacheRefreshesAtAMinute: the session an entry holds, handed
// to Put again (a TLS 1.2 resumption's re-issued session), is not stored
// while the entry is less than clientRefreshAfter old, and is stored, with
// the time of the Put, once it is that old.
func TestClientCacheRefreshesAtAMinute(t *testing.T) {
	f := newHeldFixture(t)
	stored := f.now.Unix()
	for _, tc := range []struct {
		age   time.Duration
		calls uint64
	}{
		{clientRefreshAfter - time.Second, 0},
		{clientRefreshAfter, 1},
	} {
		f.now = time.Unix(stored, 0).Add(tc.age)
		before := f.d.Stats().Calls
		f.cache.Put(serverName, f.cs)
		if calls := f.d.Stats().Calls - before; calls != tc.calls {
			t.Errorf("Put of the session of an entry %v old made %d calls to the daemon, want %d", tc.age, calls, tc.calls)
		}
	}
	if at, _, _, ok := decodeClient(f.entry()); !ok || at != f.now.Unix() {
		t.Errorf("entry stored at %d, want %d", at, f.now.Unix())
	}
}

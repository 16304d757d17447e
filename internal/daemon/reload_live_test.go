package daemon

import (
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/config"
)

// TestLiveParamsApplied: every parameter config's table says a reload
// applies in place has what applies it here, and nothing else does.
// (Every other changed parameter is warned about as needing a restart,
// or is of no use to a running daemon, as the table says.)
func TestLiveParamsApplied(t *testing.T) {
	live := map[string]bool{}
	for _, pm := range config.Parameters() {
		if pm.Reload != config.ReloadLive {
			continue
		}
		live[pm.Name] = true
		if liveParams[pm.Name] == nil {
			t.Errorf("config's table says a reload applies %s in place, but liveParams (reload.go) has nothing that does", pm.Name)
		}
	}
	if len(live) < 10 {
		t.Fatalf("only %d live parameters: %v", len(live), live)
	}
	for name := range liveParams {
		if !live[name] {
			t.Errorf("liveParams applies %s, which config's table does not mark ReloadLive", name)
		}
	}
}

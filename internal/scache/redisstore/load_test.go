package redisstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// TestLoadedHost runs a small fleet on a host kept busy by CPU burners
// (processes spinning on every core, twice over: load 4 on 2 cores) and
// counts what the load costs at each Redis timeout: tracker sessions
// lost, calls past their deadline, lookups the fallback answered,
// updates not shared, own updates read back as something else. It fails if the tracker is lost at all or a member
// reads back anything but its own latest update. It loads the whole
// machine for a while, so it runs only when asked:
//
//	TLSMGR_LOAD_TEST=1 go test -run TestLoadedHost -v ./internal/scache/redisstore/
//
// TLSMGR_LOAD_TIMEOUTS (milliseconds, comma-separated; the default
// timeout if unset), TLSMGR_LOAD_SECONDS (30), TLSMGR_LOAD_BURNERS (2 per
// core) and TLSMGR_LOAD_PACE (milliseconds between a member's rounds, 1:
// busy; a quiet fleet, 500 say, lets the tracker's heartbeat run) change
// the run.
func TestLoadedHost(t *testing.T) {
	if os.Getenv("TLSMGR_LOAD_TEST") == "" {
		t.Skip("loads the machine; set TLSMGR_LOAD_TEST=1 to run")
	}
	timeouts := []time.Duration{settings.DefaultTimeout}
	if v := os.Getenv("TLSMGR_LOAD_TIMEOUTS"); v != "" {
		timeouts = nil
		for _, f := range strings.Split(v, ",") {
			ms, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("TLSMGR_LOAD_TIMEOUTS: %v", err)
			}
			timeouts = append(timeouts, time.Duration(ms)*time.Millisecond)
		}
	}
	seconds := envInt(t, "TLSMGR_LOAD_SECONDS", 30)
	burners := envInt(t, "TLSMGR_LOAD_BURNERS", 2*runtime.NumCPU())
	pace := time.Duration(envInt(t, "TLSMGR_LOAD_PACE", 1)) * time.Millisecond
	for _, to := range timeouts {
		t.Run(to.String(), func(t *testing.T) { loadedRun(t, to, time.Duration(seconds)*time.Second, burners, pace) })
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// burn starts n processes that spin until stop is called.
func burn(t *testing.T, n int) (stop func()) {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
}

func loadedRun(t *testing.T, timeout, d time.Duration, burners int, pace time.Duration) {
	srv := redistest.Single(t)
	const n = 3
	var members []*member
	for range n {
		m := newMember(t, conf{addrs: []string{srv.Addr}, timeout: timeout})
		members = append(members, m)
	}
	for _, m := range members {
		waitTracking(t, m)
	}
	gens := make([]uint64, n)
	for i, m := range members {
		gens[i], _ = m.tracker.State()
	}
	stop := burn(t, burners)
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong, missed := 0, 0
	end := time.Now().Add(d)
	// Each member updates its own ids in turn and reads back the update
	// it made lag rounds before, long past its write's deadline, as a
	// resumption would; and reads another member's, as a resumption
	// elsewhere.
	const ids, lag = 500, 10
	for i, m := range members {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for j := 0; time.Now().Before(end); j++ {
				v := fmt.Sprintf("m%d-%d", i, j)
				if err := m.Put(ctx, fmt.Sprintf("m%d-%d", i, j%ids), entry(time.Now(), v)); err != nil {
					t.Error(err)
					return
				}
				if j >= lag {
					if got, want := lookup(m, fmt.Sprintf("m%d-%d", i, (j-lag)%ids)), fmt.Sprintf("m%d-%d", i, j-lag); got != want {
						mu.Lock()
						if got == "" {
							missed++
						} else {
							wrong++
						}
						mu.Unlock()
					}
				}
				lookup(m, fmt.Sprintf("m%d-%d", rng.IntN(n), rng.IntN(ids)))
				time.Sleep(pace)
			}
		})
	}
	wg.Wait()
	stop()
	var lost, timeouts, fallbacks, unshared, opens, lookups, local uint64
	for i, m := range members {
		st := m.FleetStats()
		// Sessions that ended: the state counts two per session.
		gen, _ := m.tracker.State()
		lost += (gen - gens[i] + 1) / 2
		timeouts += st.Backend.Timeouts
		fallbacks += st.FallbackHits + st.FallbackMisses
		unshared += st.UpdatesUnshared
		opens += st.Backend.BreakerOpens
		lookups += st.Hits + st.Misses + st.FallbackHits + st.FallbackMisses
		local += st.LocalHits + st.LocalMisses
	}
	logged := 0
	for _, m := range members {
		logged += m.clientLog.Count("warn", "invalidation tracking lost")
	}
	t.Logf("timeout %v, %d burners, pace %v, %v, %d members: tracker lost %d (%d logged); calls timed out %d; breaker opened %d; lookups %d (local %d, fallback %d); updates unshared %d; own updates read back older %d, as a miss %d",
		timeout, burners, pace, d, n, lost, logged, timeouts, opens, lookups, local, fallbacks, unshared, wrong, missed)
	if lost > 0 || wrong > 0 {
		t.Errorf("tracker lost %d times, own updates read back older %d times", lost, wrong)
	}
}

package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of Sentinel monitor.
const MasterName = "tlsmgr-test"

// SentinelSetup is one master, one replica and three sentinels (quorum 2).
type SentinelSetup struct {
	MasterName string
	Addrs      []string // the sentinels
	// Master and Replica are the current roles; WaitFailover swaps them.
	Master, Replica *Server
	Sentinels       []*Server

	tb testing.TB
}

// Sentinel starts the set-up and returns once the replica is in sync and
// every sentinel knows the master, the replica and the two other
// sentinels, so that killing the master leads to a failover.
func Sentinel(t testing.TB) *SentinelSetup {
	t.Helper()
	st := &SentinelSetup{MasterName: MasterName, tb: t}
	// Diskless sync without its default 5 s delay: the replica is in sync
	// a few milliseconds after it starts. Both get it, as roles swap.
	fast := WithConfig("repl-diskless-sync yes", "repl-diskless-sync-delay 0")
	st.Master = start(t, "master", fast)
	st.Replica = start(t, "replica", fast, WithConfig("replicaof 127.0.0.1 "+strconv.Itoa(st.Master.Port)))
	st.waitReplicaInSync()
	st.startSentinels()
	st.waitSentinelsReady()
	return st
}

func (st *SentinelSetup) waitReplicaInSync() {
	st.tb.Helper()
	m, r := st.Master.admin(), st.Replica.admin()
	defer m.Close()
	defer r.Close()
	waitFor(st.tb, "replica in sync", func(ctx context.Context) (bool, string) {
		ri, err := r.Info(ctx, "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		mi, err := m.Info(ctx, "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		ok := strings.Contains(ri, "master_link_status:up") &&
			strings.Contains(ri, "master_sync_in_progress:0") &&
			strings.Contains(mi, "state=online")
		return ok, "replica:\n" + ri + "\nmaster:\n" + mi
	}, st.Master, st.Replica)
}

func (st *SentinelSetup) startSentinels() {
	st.tb.Helper()
	ids := make([]string, 3)
	for i := range ids {
		var b [20]byte
		_, _ = rand.Read(b[:])
		ids[i] = hex.EncodeToString(b[:])
	}
	for i := range 3 {
		s := newServer(st.tb, "sentinel-"+strconv.Itoa(i+1))
		s.sentinel = true
		st.Sentinels = append(st.Sentinels, s)
	}
	// The sentinels are told about each other and the replica in their
	// files, as a sentinel records them itself: discovering them through
	// hello messages and INFO would take seconds.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		for _, s := range st.Sentinels {
			s.Port = freePort()
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		}
		for i, s := range st.Sentinels {
			mp := strconv.Itoa(st.Master.Port)
			s.conf = []string{
				"sentinel myid " + ids[i],
				"sentinel monitor " + MasterName + " 127.0.0.1 " + mp + " 2",
				"sentinel down-after-milliseconds " + MasterName + " 1000",
				"sentinel failover-timeout " + MasterName + " 10000",
				"sentinel known-replica " + MasterName + " 127.0.0.1 " + strconv.Itoa(st.Replica.Port),
			}
			for j, o := range st.Sentinels {
				if j != i {
					s.conf = append(s.conf, fmt.Sprintf("sentinel known-sentinel %s 127.0.0.1 %d %s", MasterName, o.Port, ids[j]))
				}
			}
		}
		err = nil
		for _, s := range st.Sentinels {
			if err = s.launch(true); err != nil {
				break
			}
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
		for _, s := range st.Sentinels {
			s.Stop()
		}
	}
	if err != nil {
		st.tb.Fatalf("redistest: starting sentinels: %v\n%s", err, logs(st.Sentinels...))
	}
	st.Addrs = nil
	for _, s := range st.Sentinels {
		st.Addrs = append(st.Addrs, s.Addr)
	}
}

func sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(adminOptions(addr, nil))
}

func (st *SentinelSetup) waitSentinelsReady() {
	st.tb.Helper()
	for _, s := range st.Sentinels {
		c := sentinelClient(s.Addr)
		waitFor(st.tb, s.name+" ready", func(ctx context.Context) (bool, string) {
			m, err := c.Master(ctx, MasterName).Result()
			if err != nil {
				return false, err.Error()
			}
			reps, err := c.Replicas(ctx, MasterName).Result()
			if err != nil {
				return false, err.Error()
			}
			sens, err := c.Sentinels(ctx, MasterName).Result()
			if err != nil {
				return false, err.Error()
			}
			ok := m["flags"] == "master" && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" &&
				len(reps) == 1 && reps[0]["flags"] == "slave" && reps[0]["master-link-status"] == "ok" &&
				len(sens) == 2
			for _, o := range sens {
				ok = ok && o["flags"] == "sentinel"
			}
			return ok, fmt.Sprintf("master %v\nreplicas %v\nsentinels %v", m, reps, sens)
		}, s)
		c.Close()
	}
}

// WaitFailover waits until every sentinel names the replica as the master
// and the replica says it is one (after the test killed or paused the
// master), then swaps Master and Replica.
func (st *SentinelSetup) WaitFailover() {
	st.tb.Helper()
	want := st.Replica.Addr
	r := st.Replica.admin()
	defer r.Close()
	clients := make([]*redis.SentinelClient, len(st.Sentinels))
	for i, s := range st.Sentinels {
		clients[i] = sentinelClient(s.Addr)
		defer clients[i].Close()
	}
	waitFor(st.tb, "failover to "+want, func(ctx context.Context) (bool, string) {
		var seen []string
		for _, c := range clients {
			a, err := c.GetMasterAddrByName(ctx, MasterName).Result()
			if err != nil {
				return false, err.Error()
			}
			addr := net.JoinHostPort(a[0], a[1])
			seen = append(seen, addr)
			if addr != want {
				return false, fmt.Sprintf("sentinels name %v", seen)
			}
		}
		role, err := r.Do(ctx, "ROLE").Slice()
		if err != nil {
			return false, err.Error()
		}
		return len(role) > 0 && role[0] == "master", fmt.Sprintf("replica role %v", role)
	}, append([]*Server{st.Master, st.Replica}, st.Sentinels...)...)
	st.Master, st.Replica = st.Replica, st.Master
}

// waitTimeout bounds every wait for a topology to settle; a Sentinel
// failover takes 2 to 5 s, the rest well under a second.
const waitTimeout = 30 * time.Second

// waitFor polls cond until it holds, failing the test with cond's last
// report and the servers' logs after waitTimeout. The servers offer no
// notification for these states, so asking them is the only way.
func waitFor(tb testing.TB, what string, cond func(context.Context) (bool, string), servers ...*Server) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, report := cond(ctx)
		cancel()
		if ok {
			return
		}
		last = report
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: no %s after %v; last: %s\n%s", what, waitTimeout, last, logs(servers...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logs(servers ...*Server) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "--- %s (%s) log ---\n%s\n", s.name, s.Addr, s.Log())
	}
	return b.String()
}

package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// ClusterSetup is a Redis Cluster of three masters without replicas.
type ClusterSetup struct {
	Nodes []*Server
	Addrs []string // seed addresses, one per node

	tb testing.TB
}

// slotRanges are the nodes' slots, as redis-cli --cluster create splits them.
var slotRanges = [3][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}

// Cluster starts three masters, assigns the slots and joins them, and
// returns once every node reports cluster_state:ok with all 16384 slots
// served by three known nodes.
//
// cluster-require-full-coverage is off, as an operator running a cache
// without replicas would set it: with one node down the others keep
// serving their slots instead of refusing everything (CLUSTERDOWN).
func Cluster(t testing.TB) *ClusterSetup {
	t.Helper()
	c := &ClusterSetup{tb: t}
	for i := range 3 {
		s := newServer(t, "node-"+strconv.Itoa(i+1), WithConfig(
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			"cluster-node-timeout 1000",
			"cluster-require-full-coverage no",
		))
		s.busPort = -1 // chosen by startFresh
		s.startFresh()
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// Distinct config epochs up front spare the nodes the collision
	// resolution that would otherwise delay convergence. ADDSLOTS with
	// every slot, not ADDSLOTSRANGE: Redis 6.0 has no ADDSLOTSRANGE.
	for i, s := range c.Nodes {
		a := s.admin()
		args := []any{"CLUSTER", "ADDSLOTS"}
		for slot := slotRanges[i][0]; slot <= slotRanges[i][1]; slot++ {
			args = append(args, slot)
		}
		err := a.Do(ctx, args...).Err()
		if err == nil {
			err = a.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err()
		}
		a.Close()
		if err != nil {
			t.Fatalf("redistest: setting up %s: %v\n%s", s.name, err, logs(s))
		}
	}
	first := c.Nodes[0].admin()
	for _, s := range c.Nodes[1:] {
		if err := first.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", s.Port, s.busPort).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER MEET %s: %v\n%s", s.Addr, err, logs(c.Nodes...))
		}
	}
	first.Close()
	for _, s := range c.Nodes {
		c.waitNodeOK(s)
	}
	return c
}

func (c *ClusterSetup) waitNodeOK(s *Server) {
	c.tb.Helper()
	a := s.admin()
	defer a.Close()
	waitFor(c.tb, s.name+" cluster_state:ok", func(ctx context.Context) (bool, string) {
		info, err := a.ClusterInfo(ctx).Result()
		if err != nil {
			return false, err.Error()
		}
		ok := true
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384", "cluster_known_nodes:3"} {
			ok = ok && strings.Contains(info, want+"\r\n")
		}
		return ok, info
	}, c.Nodes...)
}

// WaitOK waits until every node that runs reports the cluster healthy
// again (after a node was resumed or restarted).
func (c *ClusterSetup) WaitOK() {
	c.tb.Helper()
	for _, s := range c.Nodes {
		c.waitNodeOK(s)
	}
}

// NodeFor returns the node serving key, by the slot layout Cluster made.
func (c *ClusterSetup) NodeFor(key string) *Server {
	slot := KeySlot(key)
	for i, r := range slotRanges {
		if slot >= r[0] && slot <= r[1] {
			return c.Nodes[i]
		}
	}
	panic(fmt.Sprintf("slot %d out of range", slot))
}

// KeySlot is Redis Cluster's slot of key: CRC16 (XMODEM) of the key, or of
// its {hash tag}, modulo 16384.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

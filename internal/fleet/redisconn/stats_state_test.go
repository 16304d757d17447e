package redisconn

import (
	"fmt"
	"testing"
)

// A cluster client's state is its worst node's: down if any node is down,
// else probing if any probes, whatever the order in which the nodes are
// visited; BreakerOpens is the sum of the nodes'.
func TestStatsWorstNodeState(t *testing.T) {
	s := single("127.0.0.1:1")
	s.Cluster = true
	for _, c := range []struct {
		states []int32
		want   string
	}{
		{[]int32{closed, closed, closed}, StateUp},
		{[]int32{closed, halfOpen, closed}, StateProbing},
		{[]int32{closed, open, closed}, StateDown},
		{[]int32{halfOpen, open, closed}, StateDown},
		{[]int32{open, halfOpen, halfOpen}, StateDown},
		{[]int32{halfOpen, halfOpen, open, closed, halfOpen}, StateDown},
	} {
		c2, _ := dial(t, s, nil)
		var opens uint64
		for i, st := range c.states {
			b := c2.breaker(fmt.Sprintf("127.0.0.1:%d", 7000+i))
			b.state.Store(st)
			b.opens.Add(uint64(i + 1))
			opens += uint64(i + 1)
		}
		// Map order varies from call to call: ask often.
		for range 50 {
			if st := c2.Stats(); st.State != c.want || st.BreakerOpens != opens {
				t.Fatalf("nodes %v: state %s, %d opens; want %s, %d", c.states, st.State, st.BreakerOpens, c.want, opens)
			}
		}
	}
}

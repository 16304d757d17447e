package redisconn

import "github.com/gotlsmgr/tlsmgr/internal/metrics"

// Collect emits the client's state and counters, labelled with the
// client's name as "backend"; statPrefix names them in stats replies
// ("smtpd_cache_redis_", "redis_tktkey_").
func (c *Client) Collect(emit metrics.Emit, statPrefix string) {
	st := c.Stats()
	emit = emit.With(metrics.Label{Name: "backend", Value: c.name})
	d := func(name, stat, help string) metrics.Desc {
		return metrics.Desc{Name: "redis_" + name, Help: help, Stat: statPrefix + stat}
	}
	emit.Info(d("state", "state", "State of the Redis backend: up, down (breaker open) or probing."), st.State)
	emit.Counter(d("operations", "ops", "Redis calls, refused ones included (a pipeline is one)."), st.Ops)
	emit.Counter(d("errors", "errors", "Redis calls that failed other than by a miss."), st.Errors)
	emit.Counter(d("timeouts", "timeouts", "Redis calls that ran into their deadline."), st.Timeouts)
	emit.Counter(d("refused", "refused", "Redis calls refused by the open circuit breaker, without I/O."), st.Refused)
	emit.Counter(d("breaker_opens", "breaker_opens", "Times the circuit breaker opened."), st.BreakerOpens)
	emit.Counter(d("replies_refused", "replies_refused", "Redis replies refused for breaking a size bound or the protocol; each closed its connection and failed its call."), st.RepliesRefused)
}

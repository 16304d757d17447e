// Package prng provides the random material tlsmgr hands out: seed
// requests, ticket keys and the timers' random intervals.
package prng

import "io"

// Pool is where every random byte the daemon emits comes from.
// Implementations are safe for concurrent use.
type Pool interface {
	// Read fills p with random bytes. It fails only if the pool cannot
	// produce output at all.
	io.Reader
	// Mix stirs event data (time of day, cache traffic) into the pool.
	// The data may be attacker-chosen: it must never make output weaker.
	Mix(data []byte)
}

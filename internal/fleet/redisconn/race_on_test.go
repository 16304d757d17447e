//go:build race

package redisconn

// raceEnabled: the race detector's shadow memory cannot live under an
// address-space limit, so the hostile children use a watchdog alone.
const raceEnabled = true

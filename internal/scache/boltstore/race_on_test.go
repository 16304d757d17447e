//go:build race

package boltstore

// raceEnabled shortens the slowest tests under the race detector.
const raceEnabled = true

//go:build !race

package redisconn

// raceEnabled: see race_on_test.go.
const raceEnabled = false

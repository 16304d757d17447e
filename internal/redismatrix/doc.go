// Package redismatrix has no code, only a test: TestFlavours runs the
// fleet tests (single server, tracking, outage, the ticket-key ring,
// Sentinel, Cluster, and the daemons of integration/fleet_test.go) again
// against each Redis and Valkey of other Debian releases
// (internal/redistest's Flavours), as child go test processes with
// TLSMGR_REDIS set, and checks that every one of them ran against that
// server and passed, or failed as a known incompatibility says it must.
//
// scripts/test runs it by itself, after the integration package: its
// children check millisecond deadlines and must not share the cores
// with other packages' tests.
package redismatrix

package server

import (
	"time"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// The watchdog's view of a request (Config.Watchdog). While a request is
// being answered, conn.busy holds when it arrived, in microseconds since
// the server started plus one, shifted left by busyShift, and what it is
// in the low bits: its type (busyOps) and its cache (the index in
// Config.Caches plus one, 0 if none yet). It is 0 from the moment the
// reply is begun until the next request has been read. Only the
// connection's goroutine writes it, with plain atomic stores: no timer,
// no lock, no allocation per request. The watchdog's goroutine scans
// every connection at each check.
const (
	busyShift    = 8
	busyCacheLen = 2 // bits for the cache
	busyOpMask   = 1<<(busyShift-busyCacheLen) - 1
	busyCache    = 1<<busyCacheLen - 1
)

// busyOps are the request types for the watchdog, by busy code.
var busyOps = [...]string{
	"", // not yet dispatched: time of day going into the pool
	proto.RequestSeed, proto.RequestPolicy, proto.RequestLookup, proto.RequestUpdate,
	proto.RequestDelete, proto.RequestTktKey, proto.RequestStats,
	"", // unknown
}

// busyOp is a request name's busy code.
func busyOp(name string) uint64 {
	switch name {
	case proto.RequestSeed:
		return 1
	case proto.RequestPolicy:
		return 2
	case proto.RequestLookup:
		return 3
	case proto.RequestUpdate:
		return 4
	case proto.RequestDelete:
		return 5
	case proto.RequestTktKey:
		return 6
	case proto.RequestStats:
		return 7
	}
	return 8
}

// arrived marks the start of a request that arrived at c.now.
func (c *conn) arrived() {
	c.busyAt = (uint64(c.now.Sub(c.srv.start)/time.Microsecond) + 1) << busyShift
	c.busy.Store(c.busyAt)
}

// dispatched records the type of the request being answered.
func (c *conn) dispatched(name string) {
	c.busyAt |= busyOp(name) << busyCacheLen
	c.busy.Store(c.busyAt)
}

// cacheChosen records the cache of the request being answered.
func (c *conn) cacheChosen(i int) {
	c.busy.Store(c.busyAt | uint64(i+1)&busyCache)
}

// replying ends the watchdog's timing of a request.
func (c *conn) replying() { c.busy.Store(0) }

// oldestRequest is the server's watchdog.Source: the request that has
// been answered longest.
func (s *Server) oldestRequest() (time.Time, func() string) {
	var oldest *conn
	var busy uint64
	s.mu.Lock()
	for c := range s.conns {
		if b := c.busy.Load(); b != 0 && (oldest == nil || b < busy) {
			oldest, busy = c, b
		}
	}
	s.mu.Unlock()
	if oldest == nil {
		return time.Time{}, nil
	}
	started := s.start.Add(time.Duration(busy>>busyShift-1) * time.Microsecond)
	return started, func() string { return s.describeRequest(oldest.peer, busy) }
}

// describeRequest names a request for the watchdog, e.g. "lookup request
// for the smtpd cache from conn 17 (pid 4242, uid 107) on private/tlsmgr".
func (s *Server) describeRequest(peer string, busy uint64) string {
	what := "request"
	if op := (busy >> busyCacheLen) & busyOpMask; op < uint64(len(busyOps)) && busyOps[op] != "" {
		what = busyOps[op] + " request"
	}
	if i := int(busy & busyCache); i > 0 && i <= len(s.cfg.Caches) {
		what += " for the " + s.cfg.Caches[i-1].Name + " cache"
	}
	return what + " from " + peer
}

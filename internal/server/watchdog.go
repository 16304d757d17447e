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

// busyOps are the request types for the watchdog, by busy code: 0 is a
// request not yet dispatched (the time of day going into the pool), and
// any name not listed gets the code after the last.
var busyOps = [...]string{
	"",
	proto.RequestSeed, proto.RequestPolicy, proto.RequestLookup, proto.RequestUpdate,
	proto.RequestDelete, proto.RequestTktKey, proto.RequestStats, proto.RequestDump,
	proto.RequestFlush,
}

var busyCodes = func() map[string]uint64 {
	m := make(map[string]uint64, len(busyOps))
	for code, name := range busyOps[1:] {
		m[name] = uint64(code + 1)
	}
	return m
}()

// busyOp is a request name's busy code.
func busyOp(name string) uint64 {
	if code, ok := busyCodes[name]; ok {
		return code
	}
	return uint64(len(busyOps)) // unknown
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

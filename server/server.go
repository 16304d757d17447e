// Package server is tlsmgr's request service: it accepts client
// connections, announces the protocol, and answers seed, policy, lookup,
// update, delete and tktkey requests as Postfix's tlsmgr does.
//
// Every connection has its own goroutine; the caches, the key ring and the
// PRNG pool are safe for concurrent use, so one slow client never holds up
// another.
//
// No local user who can reach the socket can lock others out or bring the
// daemon down: a full client table makes room by closing the connection
// idle longest; a request must arrive whole, and a reply be taken, within
// Config.RequestTimeout; and only Config.MaxBlocking connections hold an
// OS thread while they wait, the others waiting in the netpoller, however
// large the table.
package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/attr"
	"github.com/gotlsmgr/tlsmgr/prng"
	"github.com/gotlsmgr/tlsmgr/scache"
	"github.com/gotlsmgr/tlsmgr/tktkey"
)

// Logger is what the server logs through.
type Logger interface {
	Info(format string, args ...any)
	Warn(format string, args ...any)
	Debug(level int, format string, args ...any)
}

// CacheType is one of the three cache names a client may ask for.
type CacheType struct {
	Name    string
	Timeout time.Duration // sanitised configured timeout, reported by policy
	Cache   *scache.Cache // nil when the cache is disabled
}

// Config is everything the service needs.
type Config struct {
	Caches []CacheType // smtpd, smtp, lmtp
	Keys   *tktkey.Manager
	Pool   prng.Pool
	Log    Logger
	Limits attr.Limits
	// IPCTimeout bounds each wait for a client's next request (ipc_timeout).
	IPCTimeout time.Duration
	// RequestTimeout bounds the rest of a request once its first byte is
	// in, however it trickles in, and each wait for the client to take a
	// reply: a client cannot hold a connection slot by sending a byte now
	// and then, or by not reading. Postfix clients write a request in one
	// go and read the reply at once, so the bound only has to allow for a
	// loaded machine. Zero means the smaller of IPCTimeout and 10s.
	RequestTimeout time.Duration
	// StoreTimeout bounds each cache and key store call from the arrival
	// of its request, so that a slow remote store makes one request fail
	// instead of stalling the client; the daemon sets it from the remote
	// stores' configured timeouts. Zero means no deadline: local stores
	// cannot hang, and a deadline costs a runtime timer per request.
	StoreTimeout time.Duration
	// MaxClients caps the client table. A new connection to a full table
	// takes the place of the connection that has waited longest for its
	// next request, which sees end of file (Postfix's clients reconnect by
	// themselves); only when every connection is in the middle of a
	// request or its reply is the new one closed at once.
	MaxClients int
	// OnAvail, if set, is told when the server stops (false) and starts
	// again (true) being able to take another client: master(8) status
	// updates. Calls strictly alternate, starting with false, because
	// master(8) panics on a repeated status. Since a full table makes room
	// by eviction, the server is "taken" only once it has had to refuse a
	// client (every connection busy), and available again as soon as a
	// connection goes idle or ends; reporting "taken" merely for holding
	// MaxClients connections would tell master(8) that we are saturated
	// while we are not.
	OnAvail func(avail bool)
	// BlockingIO serves UNIX-socket clients with blocking system calls:
	// two per request instead of the netpoller's four, at the price of
	// an OS thread per client waiting for its next request. See
	// blockingConn.
	BlockingIO bool
	// MaxBlocking caps the connections served with blocking system calls
	// when BlockingIO is set, and so the OS threads they hold; the others
	// use the netpoller. The Go runtime dies at 10000 threads, and Postfix
	// has one connection per smtpd or smtp process, far fewer than that.
	// Zero means DefaultMaxBlocking; more than 4096 is cut to 4096.
	MaxBlocking int
	// Stats, if set, adds the daemon's own counters to stats replies.
	Stats StatsFunc
}

// Defaults of Config fields.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxBlocking    = 256
)

// blockingCap bounds Config.MaxBlocking, well below the runtime's limit of
// 10000 threads.
const blockingCap = 4096

// Server serves the tlsmgr protocol.
type Server struct {
	cfg   Config
	start time.Time // origin of conn.idle
	// base is the parent of every store call's context, cancelled when
	// Shutdown gives up waiting, so that no remote call outlives it.
	base       context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{} // every connection being served
	active    int                // of them, those in the client table (not evicted)
	live      int                // serving goroutines not yet done
	drained   chan struct{}      // made by Shutdown, closed when live is 0
	isDrained bool
	closing   atomic.Bool
	blocking  atomic.Int64 // connections with blocking I/O, or reserving it

	availMu  sync.Mutex // serialises OnAvail calls
	reported bool       // last OnAvail value sent is "taken"

	counters counters
}

// New returns a server. Zero Config durations and limits get defaults.
func New(cfg Config) *Server {
	if cfg.IPCTimeout <= 0 {
		cfg.IPCTimeout = time.Hour
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = min(cfg.IPCTimeout, DefaultRequestTimeout)
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 1000
	}
	if cfg.MaxBlocking <= 0 {
		cfg.MaxBlocking = DefaultMaxBlocking
	}
	cfg.MaxBlocking = min(cfg.MaxBlocking, blockingCap)
	base, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		start:      time.Now(),
		base:       base,
		cancelBase: cancel,
		listeners:  make(map[net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: closed")

// Serve accepts connections on l until Shutdown or a fatal accept error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.cfg.Log.Warn("accept connection: %v", err)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.ServeConn(c)
	}
}

// isTemporary reports accept errors worth retrying, like running out of
// file descriptors, that net.Error no longer flags.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ServeConn serves one client connection in a new goroutine. It is used for
// accepted connections and for the -S stdin/stdout client.
func (s *Server) ServeConn(nc net.Conn) {
	now := time.Now()
	var bc *blockingConn
	if uc, ok := nc.(*net.UnixConn); ok && s.cfg.BlockingIO {
		if s.blocking.Add(1) <= int64(s.cfg.MaxBlocking) {
			b, err := newBlockingConn(uc, s.cfg.IPCTimeout, s.cfg.RequestTimeout)
			if err != nil {
				s.blocking.Add(-1)
				s.cfg.Log.Warn("client connection: %v", err)
				nc.Close()
				return
			}
			nc, bc = b, b
		} else {
			s.blocking.Add(-1)
		}
	}
	c := &conn{srv: s, nc: nc, bc: bc, peer: peerName(nc), now: now}
	_, c.halfClose = nc.(interface{ CloseRead() error })
	s.mu.Lock()
	if s.isDrained {
		s.mu.Unlock()
		s.release(c)
		return
	}
	var victim *conn
	var idle time.Duration
	if s.active >= s.cfg.MaxClients {
		if victim, idle = s.evictLocked(); victim == nil {
			s.mu.Unlock()
			s.counters.rejected.Add(1)
			s.cfg.Log.Warn("too many clients (limit %d), none of them idle: closing connection from %s", s.cfg.MaxClients, c.peer)
			s.release(c)
			s.refused()
			return
		}
	}
	s.conns[c] = struct{}{}
	s.active++
	s.live++
	if s.closing.Load() {
		// Accepted as Shutdown began: answer what it has sent, no more.
		c.stop()
	}
	s.mu.Unlock()
	s.counters.accepted.Add(1)
	if victim != nil {
		s.counters.evicted.Add(1)
		s.cfg.Log.Warn("too many clients (limit %d): closing the connection from %s idle for %v to make room",
			s.cfg.MaxClients, victim.peer, idle.Round(time.Millisecond))
	}
	go func() {
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		if !c.evicted {
			s.active--
		}
		s.mu.Unlock()
		// Closed only once out of s.conns: stop and abort work on the
		// descriptor, which must not have been reused by then.
		s.release(c)
		s.mu.Lock()
		if s.live--; s.live == 0 && s.drained != nil && !s.isDrained {
			s.isDrained = true
			close(s.drained)
		}
		s.mu.Unlock()
	}()
}

// release closes a connection that is no longer in s.conns.
func (s *Server) release(c *conn) {
	c.nc.Close()
	if c.bc != nil {
		s.blocking.Add(-1)
	}
}

// evictLocked takes out of the client table the connection that has
// waited longest for its next request, and stops it: it answers what its
// client may have sent in the meantime, then sees end of file. It returns
// nil if no connection is idle. s.mu is held.
func (s *Server) evictLocked() (*conn, time.Duration) {
	// A connection that starts reading a request between the choice and
	// the swap is passed over for the next in line.
	for range 3 {
		var victim *conn
		var since uint64
		for c := range s.conns {
			if c.evicted || c.stopped.Load() {
				continue
			}
			if t := c.idle.Load(); t != 0 && (victim == nil || t < since) {
				victim, since = c, t
			}
		}
		if victim == nil {
			return nil, 0
		}
		if victim.idle.CompareAndSwap(since, 0) {
			victim.evicted = true
			s.active--
			victim.stop()
			return victim, time.Since(s.start) - time.Duration(since-1)
		}
	}
	return nil, 0
}

// hasRoom reports whether a new client would be taken.
func (s *Server) hasRoom() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active < s.cfg.MaxClients {
		return true
	}
	for c := range s.conns {
		if !c.evicted && c.idle.Load() != 0 {
			return true
		}
	}
	return false
}

// availPoll is how often a server that has told master(8) it is taken
// looks for room again. Watching for it on every request would cost every
// request; being late by this much costs nothing, since master(8) only
// uses the status to decide whether to start another process and tlsmgr
// runs one.
const availPoll = 100 * time.Millisecond

// refused tells OnAvail that the server is taken, after a client was
// refused, and watches for room to say it is available again.
func (s *Server) refused() {
	if s.cfg.OnAvail == nil {
		return
	}
	s.availMu.Lock()
	defer s.availMu.Unlock()
	if s.reported || s.hasRoom() {
		return
	}
	s.reported = true
	s.cfg.OnAvail(false)
	go func() {
		t := time.NewTicker(availPoll)
		defer t.Stop()
		for range t.C {
			if s.closing.Load() {
				return // a stopping server reports nothing more
			}
			if s.hasRoom() {
				s.availMu.Lock()
				s.reported = false
				s.cfg.OnAvail(true)
				s.availMu.Unlock()
				return
			}
		}
	}()
}

// Shutdown stops accepting and lets every request already sent get its
// reply: connections stop reading once they have consumed what their
// clients sent, then close. It waits for them, or until ctx is done, then
// closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
		if s.live == 0 {
			s.isDrained = true
			close(s.drained)
		}
	}
	done := s.drained
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.cancelBase()
		s.mu.Lock()
		for c := range s.conns {
			c.abort()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Clients is the number of connections in the client table: open ones,
// less those evicted that are still finishing.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

func peerName(nc net.Conn) string {
	if a := nc.LocalAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "client"
}

// serving is the number of serving goroutines not yet done.
func (s *Server) serving() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

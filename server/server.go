// Package server is tlsmgr's request service: it accepts client
// connections, announces the protocol, and answers seed, policy, lookup,
// update, delete and tktkey requests as Postfix's tlsmgr does.
//
// Every connection has its own goroutine; the caches, the key ring and the
// PRNG pool are safe for concurrent use, so one slow client never holds up
// another.
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
	// StoreTimeout bounds each cache store call, so that a slow remote
	// store makes one request fail instead of stalling the client. Zero
	// means no deadline: local stores cannot hang, and a deadline costs a
	// runtime timer per request.
	StoreTimeout time.Duration
	// MaxClients caps concurrent connections; more are closed at once.
	MaxClients int
	// OnAvail, if set, is told when the server stops (false) and starts
	// again (true) being able to take another client: master(8) status
	// updates. Calls strictly alternate, starting with false, because
	// master(8) panics on a repeated status. A concurrent server is
	// available until it reaches MaxClients; reporting "taken" while
	// merely holding clients would make master(8) think it is saturated.
	OnAvail func(avail bool)
	// BlockingIO serves UNIX-socket clients with blocking system calls:
	// two per request instead of the netpoller's four, at the price of
	// an OS thread per client waiting for its next request (MaxClients
	// bounds them). See blockingConn.
	BlockingIO bool
	// Stats, if set, adds the daemon's own counters to stats replies.
	Stats StatsFunc
}

// Server serves the tlsmgr protocol.
type Server struct {
	cfg Config

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup

	availMu  sync.Mutex // serialises OnAvail calls
	reported bool       // last OnAvail value sent is "taken"

	counters counters
}

// New returns a server. Zero Config durations and limits get defaults.
func New(cfg Config) *Server {
	if cfg.IPCTimeout <= 0 {
		cfg.IPCTimeout = time.Hour
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 1000
	}
	return &Server{
		cfg:       cfg,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
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
	if uc, ok := nc.(*net.UnixConn); ok && s.cfg.BlockingIO {
		bc, err := newBlockingConn(uc, s.cfg.IPCTimeout)
		if err != nil {
			s.cfg.Log.Warn("client connection: %v", err)
			nc.Close()
			return
		}
		nc = bc
	}
	c := &conn{srv: s, nc: nc, peer: peerName(nc)}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.MaxClients {
		s.mu.Unlock()
		s.counters.rejected.Add(1)
		s.cfg.Log.Warn("too many clients (limit %d): closing connection from %s", s.cfg.MaxClients, c.peer)
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.counters.accepted.Add(1)
	s.reportAvail()
	go func() {
		defer s.wg.Done()
		c.serve()
		nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.reportAvail()
	}()
}

// reportAvail tells OnAvail about a change of availability, if any.
func (s *Server) reportAvail() {
	if s.cfg.OnAvail == nil {
		return
	}
	s.availMu.Lock()
	defer s.availMu.Unlock()
	full := s.Clients() >= s.cfg.MaxClients
	if full != s.reported {
		s.reported = full
		s.cfg.OnAvail(!full)
	}
}

// Shutdown stops accepting, lets every request already received get its
// reply, closes the connections and waits for them, or until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		// Wakes a connection blocked waiting for a request; one that is
		// answering finishes its reply first and then sees closing.
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Clients is the number of open client connections.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func peerName(nc net.Conn) string {
	if a := nc.LocalAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "client"
}

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
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/prng"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/internal/watchdog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// CacheType is one of the three cache names a client may ask for: made
// by EnabledCache or DisabledCache. Its timeout is held in one place,
// which every copy of the CacheType shares, so that Server.SetCacheTimeout
// (a reload) changes it for all of them.
type CacheType struct {
	Name  string
	Cache *scache.Cache // nil when the cache is disabled

	// timeout is a disabled cache's timeout; an enabled cache's is its
	// Cache's (scache.Cache.Timeout, the lifetime of its entries).
	timeout *atomic.Int64
}

// EnabledCache is the cache type of c, named as c is, with c's timeout.
func EnabledCache(c *scache.Cache) CacheType { return CacheType{Name: c.Name(), Cache: c} }

// DisabledCache is cache type name without a cache: policy reports it
// not cachable, with timeout (the sanitised configured one, 0 if that
// is what turns it off).
func DisabledCache(name string, timeout time.Duration) CacheType {
	ct := CacheType{Name: name, timeout: new(atomic.Int64)}
	ct.timeout.Store(int64(timeout))
	return ct
}

// Timeout is the type's timeout as in force now: the one policy reports
// and, for an enabled cache, the lifetime of its entries.
func (ct CacheType) Timeout() time.Duration {
	switch {
	case ct.Cache != nil:
		return ct.Cache.Timeout()
	case ct.timeout != nil:
		return time.Duration(ct.timeout.Load())
	}
	return 0
}

// Config is everything the service needs.
type Config struct {
	Caches []CacheType // smtpd, smtp, lmtp
	Keys   *tktkey.Manager
	Pool   prng.Pool
	Log    *slog.Logger // nil discards
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
	// Watchdog, if set, times every request from its arrival until its
	// reply is begun, and fires (daemon_timeout) when one takes longer
	// than its timeout: a store wedged on a dead disk or network file
	// system, a call that ignores its deadline. A request costs three or
	// four atomic stores for it (watchdog.go); one goroutine of the
	// Watchdog's scans the connections. Waits for the client (reading a
	// request, writing a reply) are not timed: RequestTimeout bounds
	// them.
	Watchdog *watchdog.Watchdog
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
	// blockingTransport.
	BlockingIO bool
	// MaxBlocking caps the connections served with blocking system calls
	// when BlockingIO is set, and so the OS threads they hold; the others
	// use the netpoller. The Go runtime dies at 10000 threads, and Postfix
	// has one connection per smtpd or smtp process, far fewer than that.
	// Zero means DefaultMaxBlocking; more than 4096 is cut to 4096.
	MaxBlocking int
	// MayControl says whether a peer's uid may run the operators'
	// destructive requests (flush): the daemon allows root and the mail
	// owner. Nil allows nobody.
	MayControl func(uid uint32) bool
	// Metrics is the registry the server registers its figures in, and
	// that stats requests read: the daemon's, with every other part's
	// figures in it. Nil means one of the server's own.
	Metrics *metrics.Registry
	// Greeting is who speaks first on a new connection, as the clients'
	// Postfix version expects (ServerFirst, the zero value, or ClientFirst).
	Greeting Greeting
	// LateAnnouncement is how long, with ClientFirst, a new connection may
	// stay silent before the server announces the protocol after all: its
	// client must be waiting for the announcement (Postfix 3.6 or later),
	// and would otherwise wait until ipc_timeout. Zero means
	// DefaultLateAnnouncement.
	LateAnnouncement time.Duration
	// KeyRecordLen is the length of the ticket key record in tktkey
	// replies: proto.TicketKeyRecordLen (Postfix 3.0 and later; the default) or
	// proto.TicketKeyRecordLen211 (2.11). Clients drop a record of another length.
	KeyRecordLen int
}

// Greeting says who speaks first on a new connection.
type Greeting int

const (
	// ServerFirst announces the protocol as soon as a client connects, as
	// Postfix 3.6 and later expect. A client whose request is already
	// waiting then (a Postfix 3.5 or earlier client) gets no
	// announcement, which it would read as its reply.
	ServerFirst Greeting = iota
	// ClientFirst waits for the client's request, as Postfix 2.3 to 3.5
	// expect; see Config.LateAnnouncement.
	ClientFirst
)

func (g Greeting) String() string {
	if g == ClientFirst {
		return "client first"
	}
	return "server first"
}

// Defaults of Config fields.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxBlocking    = 256
	// An old client writes its request as soon as it has connected; two
	// seconds of silence is a descheduled process at worst, and costs a
	// misconfigured new client that much once per connection.
	DefaultLateAnnouncement = 2 * time.Second
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
	lastID   atomic.Uint64 // of the last connection taken: "conn 17"
	metrics  *metrics.Registry
	// maxClients is Config.MaxClients until SetMaxClients; changed under
	// mu, and read there except for log lines.
	maxClients atomic.Int64
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
	if cfg.LateAnnouncement <= 0 {
		cfg.LateAnnouncement = DefaultLateAnnouncement
	}
	if cfg.KeyRecordLen != proto.TicketKeyRecordLen211 {
		cfg.KeyRecordLen = proto.TicketKeyRecordLen
	}
	// The server's own slice; its CacheTypes share their timeouts with
	// the caller's. A disabled one written as a literal gets a timeout
	// of 0 that SetCacheTimeout can change.
	caches := make([]CacheType, len(cfg.Caches))
	for i, ct := range cfg.Caches {
		if ct.Cache == nil && ct.timeout == nil {
			ct = DisabledCache(ct.Name, 0)
		}
		caches[i] = ct
	}
	cfg.Caches = caches
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		start:      time.Now(),
		base:       base,
		cancelBase: cancel,
		listeners:  make(map[net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
		counters:   counters{requests: newRequestStats()},
		metrics:    cfg.Metrics,
	}
	s.maxClients.Store(int64(cfg.MaxClients))
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	s.metrics.Register(s.collect)
	cfg.Watchdog.Watch(s.oldestRequest)
	return s
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
				maillog.Warnf(s.cfg.Log, "accept connection: %v", err)
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
// accepted connections.
func (s *Server) ServeConn(nc net.Conn) {
	if c := s.take(nc); c != nil {
		go s.run(c)
	}
}

// ServeConnSync serves one client connection, like ServeConn, but in the
// calling goroutine: it returns once the connection is finished and
// closed, whether its client closed it, it timed out, was evicted or was
// stopped by Shutdown, or at once if the connection was refused. It is
// used for the -S stdin/stdout client, whose end is the daemon's.
func (s *Server) ServeConnSync(nc net.Conn) {
	if c := s.take(nc); c != nil {
		s.run(c)
	}
}

// take puts a new connection in the client table, making room for it if
// need be. It returns nil, having closed nc, if the connection is refused.
func (s *Server) take(nc net.Conn) *conn {
	now := time.Now()
	peer := s.describePeer(nc)
	t, err := s.newTransport(nc)
	if err != nil {
		maillog.Warnf(s.cfg.Log, "client connection %s: %v", peer, err)
		nc.Close()
		return nil
	}
	c := &conn{srv: s, t: t, peer: peer, now: now}
	s.mu.Lock()
	if s.isDrained {
		s.mu.Unlock()
		s.release(c)
		return nil
	}
	var victim *conn
	var idle time.Duration
	limit := int(s.maxClients.Load())
	if s.active >= limit {
		if victim, idle = s.evictLocked(); victim == nil {
			s.mu.Unlock()
			s.counters.rejected.Add(1)
			maillog.Warnf(s.cfg.Log, "too many clients (limit %d), none of them idle: closing connection from %s", limit, c.peer)
			s.release(c)
			s.refused()
			return nil
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
		maillog.Warnf(s.cfg.Log, "too many clients (limit %d): closing the connection from %s idle for %v to make room",
			limit, victim.peer, idle.Round(time.Millisecond))
	}
	return c
}

// run serves a connection that take has put in the client table, then
// takes it out and closes it.
func (s *Server) run(c *conn) {
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
}

// release closes a connection that is no longer in s.conns.
func (s *Server) release(c *conn) {
	c.t.Close()
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
	if s.active < int(s.maxClients.Load()) {
		return true
	}
	for c := range s.conns {
		if !c.evicted && c.idle.Load() != 0 {
			return true
		}
	}
	return false
}

// MaxClients is the client table's cap: Config.MaxClients, or what
// SetMaxClients last set.
func (s *Server) maxClientLimit() int { return int(s.maxClients.Load()) }

// SetMaxClients changes the cap of the client table (a reload of
// tlsmgr_client_limit); n must be positive. A smaller cap closes at once
// the idle connections over it, longest idle first, as a full table does
// to make room (Postfix's clients reconnect by themselves), counted as
// evicted; connections in the middle of a request finish it, and the
// table shrinks as they end. It returns how many it closed.
func (s *Server) SetMaxClients(n int) (closed int) {
	if n <= 0 {
		return 0
	}
	s.mu.Lock()
	s.maxClients.Store(int64(n))
	for s.active > n {
		if victim, _ := s.evictLocked(); victim == nil {
			break
		}
		closed++
	}
	s.mu.Unlock()
	s.counters.evicted.Add(uint64(closed))
	return closed
}

// SetCacheTimeout changes the timeout of cache type name (a reload of
// its *_tls_session_cache_timeout), where the CacheType holds it: what
// policy requests report and, for an enabled cache, the lifetime of its
// entries (scache.Cache.SetTimeout). d must not be negative, nor 0 for
// an enabled cache; it reports whether name is a cache type.
func (s *Server) SetCacheTimeout(name string, d time.Duration) bool {
	if d < 0 {
		return false
	}
	for _, ct := range s.cfg.Caches {
		if ct.Name != name {
			continue
		}
		if ct.Cache != nil {
			if d == 0 {
				return false
			}
			ct.Cache.SetTimeout(d)
		} else {
			ct.timeout.Store(int64(d))
		}
		return true
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

// describePeer names a new connection for the log: a number of its own,
// then, on a UNIX socket, the client's pid and uid (SO_PEERCRED, as of its
// connect), and the socket it came in on, e.g. "conn 17 (pid 4242, uid
// 107) on private/tlsmgr". Every line about the connection carries it.
func (s *Server) describePeer(nc net.Conn) string {
	b := make([]byte, 0, 64)
	b = append(b, "conn "...)
	b = strconv.AppendUint(b, s.lastID.Add(1), 10)
	if uc, ok := nc.(*net.UnixConn); ok {
		if pid, uid, ok := peerCred(uc); ok {
			b = append(b, " (pid "...)
			b = strconv.AppendInt(b, int64(pid), 10)
			b = append(b, ", uid "...)
			b = strconv.AppendUint(b, uint64(uid), 10)
			b = append(b, ')')
		}
	}
	if a := nc.LocalAddr(); a != nil && a.String() != "" {
		b = append(b, " on "...)
		b = append(b, a.String()...)
	}
	return string(b)
}

// serving is the number of serving goroutines not yet done.
func (s *Server) serving() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Package redisconn is the one place tlsmgr builds a Redis client: a
// go-redis universal client (single server, Sentinel or Cluster, as the
// settings file says) configured never to make a caller wait past its
// deadline, behind a circuit breaker that stops calling a Redis that
// failed and probes it again with back-off.
//
// Every call must carry a context whose deadline is Timeout() (use
// WithTimeout): smtpd waits for tlsmgr during a handshake, so a call that
// cannot finish in time must fail, and the caller then answers from its
// local cache. The client guarantees its part: the context bounds all
// socket I/O, the wait for a pooled connection and the wait for a new one
// (go-redis dials in the background and the caller stops waiting at its
// deadline), and nothing is retried. While the breaker is open a call
// returns ErrUnavailable at once, without I/O.
//
// The breaker opens after 3 consecutive failures within 5 s: timeouts,
// refused or broken connections, and replies saying the server cannot
// serve at all (LOADING, READONLY, WRONGPASS...), but not misses
// (redis.Nil) nor errors of one command (WRONGTYPE). After 100 ms (± 20%)
// one call goes through as a probe: an answer closes the breaker, a
// failure doubles the wait, up to 5 s. A cluster has one breaker per
// node, so a node that is down costs only the calls for its slots.
//
// The log gets one warning when Redis becomes unavailable and one notice
// when it is back, never a line per call. Passwords are never logged.
//
// Nothing a server (or whoever is on the path to it) sends may crash the
// daemon: every connection any of the go-redis clients opens (commands,
// pipelines, Sentinel, Cluster nodes, the tracker's pub/sub) is read
// through internal/respguard, which refuses a reply over its bounds before
// go-redis sizes anything by it. A refusal closes that connection and
// fails its call, which the caller takes for a miss; it is counted
// (RepliesRefused) and logged at most once per refusalLogEvery.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/respguard"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// States reported by Stats.
const (
	StateUp      = "up"      // calls go to Redis
	StateDown    = "down"    // the breaker is open: calls are refused
	StateProbing = "probing" // one call is testing whether Redis is back
)

// Pool sizing, for a daemon serving up to a few hundred concurrent
// requests of one small command each: at 64 connections per server a
// burst of 300 requests queues for about 5 round trips, well within a
// 10 ms timeout on a LAN; more than that would only hold open
// connections on a Redis that many hosts share.
const (
	poolSize     = 64
	minIdleConns = 4
	connMaxIdle  = 5 * time.Minute
)

// Stats is a snapshot of a client's counters. Ops counts calls (a
// pipeline is one), including refused ones; Errors counts calls that
// failed other than by a miss (redis.Nil), among them Timeouts (deadline
// or socket timeouts) and Refused (ErrUnavailable, no I/O); BreakerOpens
// counts transitions to down. RepliesRefused counts connections closed by
// the reply guard (see respguard): each failed the call reading from it.
type Stats struct {
	State          string
	Ops            uint64
	Errors         uint64
	Timeouts       uint64
	Refused        uint64
	BreakerOpens   uint64
	RepliesRefused uint64
}

// refusalLogEvery spaces the warnings about refused replies: the first is
// logged at once, then one per interval at most, saying how many were not
// (Client.refusals). A hostile server can refuse every reply; the counter
// has them all.
const refusalLogEvery = 10 * time.Second

// Client is a guarded Redis client.
type Client struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	name    string
	desc    string // the servers, for messages
	log     *slog.Logger
	bcfg    breakerConfig

	ops, errs, timeouts, refused atomic.Uint64
	repliesRefused               atomic.Uint64

	// opts and sentinel build the tracker's client (Track); nil for a
	// cluster.
	opts     *redis.UniversalOptions
	sentinel bool

	mu       sync.Mutex
	breakers map[string]*breaker     // by node address for a cluster; one entry "" otherwise
	whole    atomic.Pointer[breaker] // breakers[""], for Refusing
	dialErrs map[string]dialFailure
	checking atomic.Bool // a checkIdle PING is on its way

	refusals maillog.Cause // the rate limit of the warnings about them
}

// dialFailure is the last failed dial of an address. The caller of a call
// that waited for that dial sees only its own deadline pass (the dial goes
// on in the background), so the down message adds what the dial said: an
// untrusted certificate is worth knowing.
type dialFailure struct {
	err error
	at  time.Time
}

var quietOnce sync.Once

// New builds the client the settings describe; name says what it is for
// ("smtpd", "tktkey"...) in messages. It does not connect: a Redis that is
// down at start-up is an outage like any other, not a configuration error.
// log may be nil.
func New(s *settings.Settings, log *slog.Logger, name string) (*Client, error) {
	return newClient(s, log, name, nil)
}

func newClient(s *settings.Settings, log *slog.Logger, name string, tune func(*breakerConfig)) (*Client, error) {
	if s == nil {
		return nil, errors.New("redisconn: no settings")
	}
	if err := check(s); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path, err)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = settings.DefaultTimeout
	}
	tlsConf, err := tlsConfig(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path, err)
	}
	// go-redis logs each failed dial and command to stderr; tlsmgr's
	// rule is one line per transition, which the breaker writes.
	quietOnce.Do(func() { redis.SetLogger(&logging.VoidLogger{}) })

	dialTimeout := max(5*timeout, 100*time.Millisecond)
	c := &Client{
		timeout:  timeout,
		name:     name,
		desc:     describe(s),
		log:      maillog.OrDiscard(log),
		bcfg:     defaultBreaker(timeout, dialTimeout),
		breakers: map[string]*breaker{},
		dialErrs: map[string]dialFailure{},
	}
	c.refusals = maillog.Cause{
		Key:   "Redis " + name + " (" + c.desc + ") replies refused",
		Every: refusalLogEvery,
		Note:  " (%d more refused since the last report)",
	}
	if tune != nil {
		tune(&c.bcfg)
	}

	addrs := make([]string, len(s.Servers))
	for i, a := range s.Servers {
		addrs[i] = strings.TrimPrefix(a, "unix:")
	}
	uo := &redis.UniversalOptions{
		Addrs:      addrs,
		MasterName: s.SentinelMaster,
		DB:         s.Database,
		Username:   s.Username,
		Password:   s.Password,
		TLSConfig:  tlsConf,
		// Every client below, and the tracker's, dials through this.
		Dialer: c.noteDials(c.guard(dialer(dialTimeout, tlsConf))),

		ContextTimeoutEnabled: true,
		// -1, not 0: 0 means the default of 3 retries.
		MaxRetries:      -1,
		MinRetryBackoff: -1,
		MaxRetryBackoff: -1,
		ReadTimeout:     timeout,
		WriteTimeout:    timeout,
		// The caller never waits for a dial past its deadline (the pool
		// dials in a goroutine); a longer dial timeout lets a slow
		// connection still complete and serve the next call. One attempt
		// per dial: the breaker decides when to try again.
		DialTimeout:   dialTimeout,
		DialerRetries: 1,
		PoolSize:      poolSize,
		PoolTimeout:   timeout,
		MinIdleConns:  minIdleConns,
		// Connections opened for a burst are closed after it.
		ConnMaxIdleTime: connMaxIdle,
		// One pool to reason about: pipelines use it too.
		PipelinePoolSize: -1,
		// No CLIENT SETINFO round trip on each new connection, no
		// maintenance-notification handshake (for managed Redis services).
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}

	// NewUniversalClient chooses by the number of addresses (two or more
	// make a Cluster client); tlsmgr chooses by the settings.
	//
	// The breaker is a redis.Limiter but goes in as a hook. Options.Limiter
	// would be wrong: go-redis initialises each new connection (HELLO,
	// SELECT) through a Conn that shares the client's Options, so the
	// Limiter is asked again inside the call that needed the connection:
	// a half-open breaker refuses that nested HELLO, and every probe that
	// needs a fresh connection (all of them, after an outage) fails. The
	// nested call carries the caller's context, which the hook marks. Nor
	// do FailoverOptions and ClusterOptions have a Limiter at all.
	switch {
	case s.SentinelMaster != "":
		rdb := redis.NewFailoverClient(uo.Failover())
		rdb.AddHook(&hook{c: c, br: c.breaker(""), count: true})
		c.rdb, c.opts, c.sentinel = rdb, uo, true
	case s.Cluster:
		co := uo.Cluster()
		// With routing policies on, every call first needs the COMMAND
		// table: fetched from up to 3 random nodes under an exclusive
		// lock, with a 5 s deadline of its own instead of the caller's,
		// and fetched again by the next call after a failure. Its reply
		// is large; with a paused node in the test this also tripped a
		// healthy node's breaker. Slot routing is all tlsmgr needs.
		co.DisableRoutingPolicies = true
		// Each node gets its own client: one breaker per node, so a node
		// down costs only its keys.
		co.NewClient = func(o *redis.Options) *redis.Client {
			n := redis.NewClient(o)
			n.AddHook(&hook{c: c, br: c.breaker(o.Addr)})
			return n
		}
		rdb := redis.NewClusterClient(co)
		// Counted once per call at the top, however many nodes or
		// redirections it takes; the top also keeps the call from being
		// retried on a node that failed it (see clusterCall).
		rdb.AddHook(&hook{c: c, count: true, cluster: true})
		c.rdb = rdb
	default:
		rdb := redis.NewClient(uo.Simple())
		rdb.AddHook(&hook{c: c, br: c.breaker(""), count: true})
		c.rdb, c.opts = rdb, uo
	}
	return c, nil
}

func check(s *settings.Settings) error {
	switch {
	case len(s.Servers) == 0:
		return errors.New("no servers")
	case s.SentinelMaster != "" && s.Cluster:
		return errors.New("sentinel_master and cluster = yes cannot be combined")
	case s.SentinelMaster == "" && !s.Cluster && len(s.Servers) > 1:
		return errors.New("several servers need sentinel_master or cluster = yes")
	case s.Cluster && s.Database != 0:
		return errors.New("a Redis Cluster has only database 0")
	case s.TLSCAFile != "" && !s.TLS:
		return errors.New("tls_ca_file without tls = yes")
	}
	return nil
}

func describe(s *settings.Settings) string {
	servers := strings.Join(s.Servers, ", ")
	switch {
	case s.SentinelMaster != "":
		return fmt.Sprintf("master %s via sentinels %s", s.SentinelMaster, servers)
	case s.Cluster:
		return "cluster " + servers
	}
	return servers
}

// tlsConfig is nil without tls = yes. The server name is left empty: the
// dialer checks the certificate against each address dialled, which for a
// cluster or a Sentinel master is only known at run time. Without
// tls_ca_file the system's roots are loaded now rather than at the first
// handshake, which would spend a call's deadline reading them. With
// tls_ca_file the roots are the bytes settings.Load read from it
// (s.TLSCA): the file is not opened again, so what is trusted is what was
// checked.
func tlsConfig(s *settings.Settings) (*tls.Config, error) {
	if !s.TLS {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.TLSCAFile == "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("tls = yes without tls_ca_file: system roots: %w", err)
		}
		conf.RootCAs = pool
		return conf, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.TLSCA) {
		return nil, fmt.Errorf("tls_ca_file %s: no PEM certificate", s.TLSCAFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

// dialer replaces go-redis's, whose TLS handshake ignores the context
// (tls.DialWithDialer), and dials paths (from unix:/path) as Unix sockets.
func dialer(timeout time.Duration, conf *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	d := &net.Dialer{
		Timeout:         timeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	td := &tls.Dialer{NetDialer: d, Config: conf}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if strings.HasPrefix(addr, "/") {
			network = "unix"
		}
		if conf == nil {
			return d.DialContext(ctx, network, addr)
		}
		return td.DialContext(ctx, network, addr)
	}
}

// guard wraps every connection dial makes in the reply guard, outside TLS
// (it reads what go-redis reads).
func (c *Client) guard(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return respguard.Wrap(conn, respguard.Default, func(e *respguard.Error) { c.replyRefused(addr, e) }), nil
	}
}

// replyRefused counts a refusal and logs it, rate-limited (c.refusals).
func (c *Client) replyRefused(addr string, e *respguard.Error) {
	c.repliesRefused.Add(1)
	c.refusals.Warnf(c.log, "Redis %s (%s): reply from %s refused: %s, at byte %d of the connection; connection closed, the call fails",
		c.name, c.desc, addr, e.Reason, e.Offset)
}

func (c *Client) noteDials(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		c.mu.Lock()
		if err != nil {
			c.dialErrs[addr] = dialFailure{err, time.Now()}
		} else {
			delete(c.dialErrs, addr)
		}
		c.mu.Unlock()
		return conn, err
	}
}

// lastDialErr returns the latest recent dial failure of node, or of any
// address for the breaker of a whole client (node "").
func (c *Client) lastDialErr(node string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last dialFailure
	for addr, f := range c.dialErrs {
		if (node == "" || addr == node) && f.at.After(last.at) {
			last = f
		}
	}
	if last.err == nil || time.Since(last.at) > 10*time.Second {
		return nil
	}
	return last.err
}

// breaker returns the breaker for a node ("" for the whole client), the
// same one again if go-redis makes a new client for a known address.
func (c *Client) breaker(node string) *breaker {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.breakers[node]; ok {
		return b
	}
	what := ""
	if node != "" {
		what = "node " + node + " "
	}
	b := newBreaker(c.bcfg,
		func(cause error) {
			why := cause.Error()
			if d := c.lastDialErr(node); d != nil && !strings.Contains(why, d.Error()) {
				why += " (connecting: " + d.Error() + ")"
			}
			maillog.Warnf(c.log, "Redis %s (%s): %sunavailable: %s; serving from the local cache", c.name, c.desc, what, why)
		},
		func(outage time.Duration) {
			maillog.Infof(c.log, "Redis %s (%s): %savailable again after %v", c.name, c.desc, what, outage.Round(time.Millisecond))
		})
	c.breakers[node] = b
	if node == "" {
		c.whole.Store(b)
	}
	return b
}

// Refusing reports, without I/O or locks, that a call made now would be
// refused by the open breaker; it then counts as one refused call. A
// caller that checks first can skip building the call at all: hashing
// the key, the command, its context. Always false for a cluster, whose
// nodes' breakers decide per key.
func (c *Client) Refusing() bool {
	b := c.whole.Load()
	if b == nil || !b.refusing() {
		return false
	}
	c.refused.Add(1)
	return true
}

// down reports that the breaker of a single server or Sentinel set-up is
// open, without counting anything.
func (c *Client) down() bool {
	b := c.whole.Load()
	return b != nil && b.stateName() == StateDown
}

// checkIdle sends a PING through the request path (breaker, deadline,
// counters), once at a time and never while the breaker refuses, so that
// the breaker follows Redis on a member with no traffic: the tracker
// calls it (always) when its session ends or fails to start, and (only
// while the breaker is open or probing) when Redis answers its pings.
// Without it a member that no request reaches says "up" through an
// outage, and "down" after it until the next handshake. The tracker's
// own failures are not counted as the breaker's: a cut tracking
// connection says nothing about the requests' path, this PING does.
func (c *Client) checkIdle(always bool) {
	b := c.whole.Load()
	if b == nil || !always && b.state.Load() == closed || b.refusing() || !c.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.checking.Store(false)
		ctx, cancel := c.WithTimeout(context.Background())
		defer cancel()
		_ = c.rdb.Ping(ctx).Err()
	}()
}

// Redis returns the client for commands; give every call a context from
// WithTimeout.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// Timeout is the per-operation deadline from the settings.
func (c *Client) Timeout() time.Duration { return c.timeout }

// WithTimeout derives the context for one call: parent's values and
// cancellation, and a deadline of Timeout() at most.
func (c *Client) WithTimeout(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.timeout)
}

// Stats returns the counters and the state: for a cluster, the worst of
// its nodes' (down, then probing, then up).
func (c *Client) Stats() Stats {
	st := Stats{
		State:    StateUp,
		Ops:      c.ops.Load(),
		Errors:   c.errs.Load(),
		Timeouts: c.timeouts.Load(),
		Refused:  c.refused.Load(),

		RepliesRefused: c.repliesRefused.Load(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.breakers {
		st.BreakerOpens += b.opens.Load()
		switch s := b.stateName(); {
		case s == StateDown:
			st.State = StateDown
		case s == StateProbing && st.State == StateUp:
			st.State = StateProbing
		}
	}
	return st
}

// Close closes the connections.
func (c *Client) Close() error { return c.rdb.Close() }

func (c *Client) count(err error) {
	c.ops.Add(1)
	if err == nil || errors.Is(err, redis.Nil) {
		return
	}
	c.errs.Add(1)
	if errors.Is(err, ErrUnavailable) {
		c.refused.Add(1)
	} else if isTimeout(err) {
		c.timeouts.Add(1)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.As(err, &ne) && ne.Timeout()
}

// hook applies a breaker (br) and counts calls (count) once per call:
// calls nested in one (a new connection's HELLO) pass straight through.
// cluster marks the hook at the top of a cluster client, above the nodes'.
type hook struct {
	c       *Client
	br      *breaker
	count   bool
	cluster bool
}

// hookKey marks a context as inside a call through one hook.
type hookKey struct{ h *hook }

// clusterCall is one call through a cluster client. go-redis's
// ClusterClient retries a command after a timeout, a failed dial or a
// broken connection (up to MaxRedirects more attempts, on the same node
// first), whatever MaxRetries says. Each attempt would reach the node's
// breaker as one more failure, so one call could open it, and the call
// then ended with the breaker's refusal instead of its own timeout, which
// Stats counted as refused. A node that failed a call fails its retries
// at once with the same error, without I/O or its breaker; redirections
// (MOVED, ASK) and retries on other nodes (after READONLY) go on.
type clusterCall struct {
	mu     sync.Mutex
	failed map[*hook]error
}

type clusterCallKey struct{}

// failedBefore returns the error with which the node of h failed this
// call before, if it did.
func (h *hook) failedBefore(ctx context.Context) error {
	cc, _ := ctx.Value(clusterCallKey{}).(*clusterCall)
	if cc == nil || h.br == nil || ctx.Value(hookKey{h}) != nil {
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.failed[h]
}

// noteFailure records that the node of h failed this call.
func (h *hook) noteFailure(ctx context.Context, err error) {
	cc, _ := ctx.Value(clusterCallKey{}).(*clusterCall)
	if cc == nil || h.br == nil || classify(err) != failure {
		return
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.failed == nil {
		cc.failed = map[*hook]error{}
	}
	cc.failed[h] = err
}

func (h *hook) DialHook(next redis.DialHook) redis.DialHook { return next }

// begin returns the context for the call and whether this is the outer
// call, or the breaker's refusal.
func (h *hook) begin(ctx context.Context) (context.Context, bool, error) {
	if ctx.Value(hookKey{h}) != nil {
		return ctx, false, nil
	}
	if h.cluster {
		ctx = context.WithValue(ctx, clusterCallKey{}, &clusterCall{})
	}
	if h.br != nil {
		if err := h.br.Allow(); err != nil {
			if h.count {
				h.c.count(err)
			}
			return ctx, false, err
		}
	}
	return context.WithValue(ctx, hookKey{h}, true), true, nil
}

func (h *hook) end(ctx context.Context, err error) {
	if h.br != nil {
		h.br.ReportResult(err)
		h.noteFailure(ctx, err)
	}
	if h.count {
		h.c.count(err)
	}
}

func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.failedBefore(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		ctx, outer, err := h.begin(ctx)
		if err != nil {
			return err
		}
		err = next(ctx, cmd)
		if outer {
			h.end(ctx, err)
		}
		return err
	}
}

func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := h.failedBefore(ctx)
		if err == nil {
			ctx, outer, berr := h.begin(ctx)
			if berr == nil {
				err = next(ctx, cmds)
				if outer {
					h.end(ctx, err)
				}
				return err
			}
			err = berr
		}
		// Exec returns this error, but callers read the commands.
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
		return err
	}
}

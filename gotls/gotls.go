// Package gotls lets Go TLS servers and clients share TLS state through a
// tlsmgr daemon, as Postfix's smtpd and smtp processes do: a
// tls.ClientSessionCache kept in one of the daemon's caches (client side),
// session ticket keys taken from the daemon's ticket-key ring (server side,
// shared tickets), and Config.WrapSession/UnwrapSession that keep session
// state in a cache and hand clients only a random identity (server side,
// stateful). With the daemon's fleet mode, that state is shared by every
// process of every host.
//
// crypto/tls gives these hooks no context and treats their errors as fatal
// to the handshake, so every call to the daemon carries its own short
// deadline, and a daemon that is slow or gone is a cache miss, never a
// failed or blocked handshake.
package gotls

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Options say how to reach the daemon.
type Options struct {
	Socket string // the daemon's socket, e.g. /var/spool/postfix/private/tlsmgr
	// Timeout bounds one call to the daemon, inside a handshake; default
	// 50ms. A call that runs out of it is a miss.
	Timeout time.Duration
	// Conns is how many connections calls share (each carries one call
	// at a time); default 4.
	Conns int
	// Logger receives a warning (with the error as "err") when the
	// daemon stops answering and a line at slog.LevelInfo when it answers
	// again; nil means slog.Default().
	// After a call ran out of time, calls are misses at once, but for one
	// a second that asks.
	Logger *slog.Logger
}

// Daemon is a connection pool to a tlsmgr daemon, shared by the adapters.
// It is safe for concurrent use.
type Daemon struct {
	clients []*client.Client
	busy    []atomic.Int32 // calls under way on each client
	next    atomic.Uint32
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex // orders the up/down log lines
	failing atomic.Bool

	// After a call ran out of time (down), calls fail at once but for
	// one every retry, which asks again: a stopped or stuck daemon
	// would otherwise cost every handshake a timeout per call. A call
	// that fails at once (no socket, connection refused) costs nothing
	// and does not trip this.
	retry   time.Duration
	down    atomic.Bool
	probeAt atomic.Int64 // time.UnixNano of the next probe, while down

	calls, failures atomic.Uint64
}

// Dial returns a pool for the daemon at opts.Socket. It connects on
// first use, so a daemon that is not up yet is not an error.
func Dial(opts Options) *Daemon {
	if opts.Timeout <= 0 {
		opts.Timeout = 50 * time.Millisecond
	}
	if opts.Conns <= 0 {
		opts.Conns = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := &Daemon{timeout: opts.Timeout, log: opts.Logger, busy: make([]atomic.Int32, opts.Conns), retry: time.Second}
	for range opts.Conns {
		d.clients = append(d.clients, client.New(opts.Socket, client.Options{DialTimeout: opts.Timeout, Timeout: opts.Timeout}))
	}
	return d
}

// Close closes the pool's connections.
func (d *Daemon) Close() error {
	var errs []error
	for _, c := range d.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Stats are the pool's counts since Dial.
type Stats struct {
	Calls    uint64 // calls to the daemon
	Failures uint64 // calls that failed or ran out of time (not misses)
}

// Stats returns the pool's counts.
func (d *Daemon) Stats() Stats {
	return Stats{Calls: d.calls.Load(), Failures: d.failures.Load()}
}

// errDown is the failure of a call not made: the last call to the daemon
// ran out of time and it is not yet time to ask it again.
var errDown = errors.New("gotls: tlsmgr daemon not answering in time, not asked again yet")

// do runs f with one of the pool's clients under the pool's deadline. A
// miss (client.ErrNotFound) is an answer; anything else is a failure,
// counted, and logged when it starts a run of failures.
func (d *Daemon) do(f func(ctx context.Context, c *client.Client) error) error {
	if d.down.Load() {
		now, at := time.Now().UnixNano(), d.probeAt.Load()
		if now < at || !d.probeAt.CompareAndSwap(at, now+int64(d.retry)) {
			d.calls.Add(1)
			d.failures.Add(1)
			return errDown
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	i := d.pick()
	d.busy[i].Add(1)
	d.calls.Add(1)
	err := f(ctx, d.clients[i])
	d.busy[i].Add(-1)
	failed := err != nil && !errors.Is(err, client.ErrNotFound)
	if failed {
		d.failures.Add(1)
	} else if !d.down.Load() && !d.failing.Load() {
		return err // the common case: nothing to change, nothing to log
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	slow := failed && timedOut(err)
	if slow {
		d.probeAt.Store(time.Now().Add(d.retry).UnixNano())
	}
	d.down.Store(slow)
	// Logged before the flag changes: a call that reads the flag without
	// the lock and returns at once must find the change already logged.
	switch {
	case failed && !d.failing.Load():
		d.log.Warn("gotls: tlsmgr daemon not answering; sessions are not shared until it does", "err", err)
		d.failing.Store(true)
	case !failed && d.failing.Load():
		d.log.Info("gotls: tlsmgr daemon answering again")
		d.failing.Store(false)
	}
	return err
}

// timedOut reports a call that ran out of its time.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// pick returns the index of an idle client, starting the search at the
// next one in turn, or the next one in turn when all are busy: a call
// then waits for the one before it on that connection.
func (d *Daemon) pick() int {
	n := uint32(len(d.clients))
	start := d.next.Add(1) % n
	for k := range n {
		if i := (start + k) % n; d.busy[i].Load() == 0 {
			return int(i)
		}
	}
	return int(start)
}

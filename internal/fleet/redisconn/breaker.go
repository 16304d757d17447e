package redisconn

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is the error of every call the circuit breaker refuses:
// Redis failed recently and is not being asked until the next probe.
var ErrUnavailable = errors.New("redis unavailable (circuit breaker open)")

// Breaker states.
const (
	closed int32 = iota
	open
	halfOpen
)

// breakerConfig holds the breaker's tunables; defaultBreaker is what New
// uses, tests shorten or disable parts of it.
type breakerConfig struct {
	threshold  int           // consecutive failures that open the breaker
	window     time.Duration // ... all within this long of the first
	minBackoff time.Duration // first wait before a probe
	maxBackoff time.Duration // the wait doubles up to this
	jitter     float64       // each wait is scaled by 1 ± jitter
	// probeLease bounds how long a probe may stay unanswered before
	// another is let through, so a probe whose result never comes back
	// cannot keep the breaker half-open for ever.
	probeLease time.Duration
}

func defaultBreaker(timeout, dialTimeout time.Duration) breakerConfig {
	return breakerConfig{
		threshold:  3,
		window:     5 * time.Second,
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second,
		jitter:     0.2,
		// The longest a call can take without a context deadline: pool
		// wait, a dial, the connection's HELLO, the command's write and read.
		probeLease: dialTimeout + 4*timeout,
	}
}

var _ redis.Limiter = (*breaker)(nil)

// breaker is a circuit breaker with go-redis's Limiter interface. Allow in
// the closed state and in the open state before the next probe is one
// atomic load and no lock, and never any I/O.
type breaker struct {
	cfg    breakerConfig
	now    func() time.Duration // monotonic; injectable for tests
	rand   func() float64
	onDown func(cause error)
	onUp   func(outage time.Duration)

	state atomic.Int32
	// until is, when open, the time of the next probe; when half-open, the
	// end of the current probe's lease.
	until atomic.Int64
	opens atomic.Uint64
	// failing is set while a failure streak is under way, so that the
	// common success needs no lock.
	failing atomic.Bool

	mu          sync.Mutex
	streak      int
	streakStart time.Duration
	backoff     time.Duration
	downAt      time.Duration

	// logMu keeps transition messages in transition order without
	// holding mu (and so blocking Allow) while the logger writes.
	logMu sync.Mutex
}

func newBreaker(cfg breakerConfig, onDown func(error), onUp func(time.Duration)) *breaker {
	epoch := time.Now()
	return &breaker{
		cfg:    cfg,
		now:    func() time.Duration { return time.Since(epoch) },
		rand:   rand.Float64,
		onDown: onDown,
		onUp:   onUp,
	}
}

// refusing reports, with two atomic loads, that Allow would refuse now.
func (b *breaker) refusing() bool {
	return b.state.Load() != closed && b.now() < time.Duration(b.until.Load())
}

// Allow implements redis.Limiter.
func (b *breaker) Allow() error {
	switch b.state.Load() {
	case closed:
		return nil
	case open, halfOpen:
		if b.now() < time.Duration(b.until.Load()) {
			return ErrUnavailable
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch b.state.Load() {
	case closed:
		return nil
	case open, halfOpen:
		// A due probe, or a new one in place of a probe whose lease ran out.
		if now < time.Duration(b.until.Load()) {
			return ErrUnavailable
		}
		b.until.Store(int64(now + b.cfg.probeLease))
		b.state.Store(halfOpen)
	}
	return nil
}

// ReportResult implements redis.Limiter.
func (b *breaker) ReportResult(err error) {
	o := classify(err)
	if o == success && b.state.Load() == closed && !b.failing.Load() {
		return
	}
	var logf func()
	b.mu.Lock()
	now := b.now()
	switch b.state.Load() {
	case closed:
		switch o {
		case success:
			b.streak = 0
			b.failing.Store(false)
		case failure:
			if b.streak == 0 || now-b.streakStart > b.cfg.window {
				b.streak, b.streakStart = 0, now
			}
			b.streak++
			b.failing.Store(true)
			if b.streak >= b.cfg.threshold {
				b.backoff = b.cfg.minBackoff
				b.trip(now)
				b.downAt = now
				b.opens.Add(1)
				logf = func() { b.onDown(err) }
			}
		}
	case halfOpen:
		switch o {
		case success:
			b.state.Store(closed)
			b.streak = 0
			b.failing.Store(false)
			outage := now - b.downAt
			logf = func() { b.onUp(outage) }
		case failure:
			b.backoff = min(2*b.backoff, b.cfg.maxBackoff)
			b.trip(now)
		case neutral:
			// A cancelled probe tells nothing: let the next call probe.
			b.until.Store(int64(now))
			b.state.Store(open)
		}
	case open:
		// Results of calls let through before the breaker opened; only
		// probes decide.
	}
	if logf == nil {
		b.mu.Unlock()
		return
	}
	b.logMu.Lock()
	b.mu.Unlock()
	logf()
	b.logMu.Unlock()
}

// trip opens the breaker until a jittered back-off from now; with b.mu held.
func (b *breaker) trip(now time.Duration) {
	j := 1 + b.cfg.jitter*(2*b.rand()-1)
	b.until.Store(int64(now + time.Duration(float64(b.backoff)*j)))
	b.state.Store(open)
}

// stateName is the breaker's state for Stats.
func (b *breaker) stateName() string {
	switch b.state.Load() {
	case open:
		return StateDown
	case halfOpen:
		return StateProbing
	}
	return StateUp
}

type outcome int

const (
	success outcome = iota // Redis answered
	failure                // Redis did not answer, or cannot serve
	neutral                // says nothing about Redis
)

// unavailableReplies are error replies meaning the server cannot serve
// anything now (starting, master lost, cluster down, demoted master,
// authentication refused, too many clients, a script hogging it); other
// replies (WRONGTYPE, syntax, OOM on a write...) belong to one command.
var unavailableReplies = []string{
	"LOADING ", "MASTERDOWN ", "CLUSTERDOWN ", "READONLY ", "NOAUTH ", "WRONGPASS ",
	"BUSY ", "ERR max number of clients reached",
}

// classify sorts a call's result: a miss (redis.Nil) and a command error
// are answers; a timeout, a refused or broken connection, or a reply from
// unavailableReplies is a failure; a cancelled call or a closed client
// says nothing.
func classify(err error) outcome {
	if err == nil || errors.Is(err, redis.Nil) {
		return success
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) || errors.Is(err, ErrUnavailable) {
		return neutral
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range unavailableReplies {
			if strings.HasPrefix(msg, p) {
				return failure
			}
		}
		return success
	}
	return failure
}

package redisconn

// Tracking is Redis's server-assisted client-side caching in broadcasting
// mode: after CLIENT TRACKING ON BCAST PREFIX p REDIRECT s, Redis tells
// the connection s about every change to a key under p, whoever makes it:
// a write, a delete, an expiry, an eviction, a flush. A consumer may then
// answer from a local copy of a key that it read while tracking was on,
// as long as no invalidation of the key has come since.
//
// go-redis has a client-side cache of its own, but it is experimental,
// for a single server only, and it answered a read after a write of the
// same key through the same client with the old value (its invalidations
// are applied by a background drainer): tlsmgr's shared cache must read
// its own writes. So tlsmgr keeps its own local copies, and this file only
// keeps Redis telling it what changed.
//
// Two connections of a client of the tracker's own: s, subscribed to
// __redis__:invalidate, and c, which turns tracking on with the
// redirection to s. If either is lost Redis stops telling, silently. So
// liveness is proved, every heartbeat whatever else arrives, by what only
// these two connections can produce: a PING with a fresh number sent
// through s, whose answer comes back through s after every invalidation
// Redis wrote to s before it, and a PING through c. Tracking on c ends
// only with a command on c, which only the tracker sends, or with c
// itself; so c answering, with no new connection in its place, says that
// it still tracks into s. Messages anyone can PUBLISH on
// __redis__:invalidate prove nothing. A round whose answers do not come
// within trackPongTimeout ends the session; a copy is trusted only while
// the last proof is younger than trackFresh (State). The tracker also
// notices any new connection of either (go-redis reconnects on its own).
// Off is the safe state: every lookup then asks Redis.
//
// Why not a canary key written through c: Redis refuses writes at
// maxmemory (OOM) and during CLIENT PAUSE WRITE, and an ACL may forbid
// them; tracking must survive exactly those, when a member's own writes
// fail and it needs to see the fleet's changes to know which value is
// newer.
//
// The numbered pings are also fences (Mark, Passed, Fence): an
// invalidation that arrives after the answer to a ping sent after some
// moment is for a change Redis made after that moment. Redis writes BCAST
// invalidations at the end of the event-loop iteration that made the
// change, so one made in the same iteration as the ping, before it, still
// follows the ping's answer; but that iteration began after the ping
// reached Redis, so the change too was made after the moment.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

// invalidateChannel is where Redis sends invalidations in RESP2.
const invalidateChannel = "__redis__:invalidate"

// Tracker timing. None of it is the request path's: nobody waits on the
// tracker's calls (a Fence waits only as long as its caller allows), so
// they get what a loaded host needs rather than the settings' timeout,
// which is for one request of a handshake. With the settings' 10 ms the
// tracker lost its connections ten times in 35 s on a 2-core host at
// load 4, and every lookup asked Redis meanwhile.
const (
	// trackSetupTimeout bounds each set-up call and each socket read or
	// write of the tracker's own connections.
	trackSetupTimeout = time.Second
	// trackHeartbeat is how often liveness is proved.
	trackHeartbeat = 250 * time.Millisecond
	// trackPongTimeout is how long a round's answers may take before the
	// session counts as lost.
	trackPongTimeout = time.Second
	// trackFresh is how old the last proof may be for State to report
	// tracking on: beyond it, a change Redis made may be on its way
	// unseen, so local copies are not trusted. It bounds how long a
	// copy may be served after its invalidation was lost with the
	// connections (the session itself ends at trackPongTimeout).
	trackFresh      = time.Second
	trackMinBackoff = 100 * time.Millisecond
	trackMaxBackoff = 5 * time.Second
)

// Tracker keeps Redis reporting changes to the keys under one prefix.
type Tracker struct {
	rdb        *redis.Client
	prefix     string
	invalidate func(keys []string)
	log        *slog.Logger
	name       string
	down       func() bool // the breaker has reported an outage not over yet
	// check has the client ask Redis through the request path (always,
	// or only while its breaker is not closed): see Client.checkIdle.
	check      func(always bool)
	lostLogged bool      // the run goroutine's
	epoch      time.Time // for proven, monotonic

	// state is the generation times two, plus one while tracking is on:
	// a copy read while on stays trustworthy only as long as the state
	// does not change.
	state atomic.Uint64
	// proven is when (nanoseconds since epoch) the ping of the latest
	// complete round was sent: every invalidation of a change Redis made
	// before then has been passed on.
	proven atomic.Int64

	// Fences: numbers handed to pings (fseq) and the highest number whose
	// answer has arrived (fdone).
	fseq, fdone atomic.Uint64

	// live is the subscription while a session runs; Fence pings
	// through it.
	live  atomic.Pointer[liveSession]
	smu   sync.Mutex
	syncs map[uint64]chan struct{} // Fence waiters by number

	cancel context.CancelFunc
	done   chan struct{}
}

type liveSession struct {
	ps    *redis.PubSub
	ended chan struct{}
}

// connSlot marks the context of the tracker's calls: OnConnect records in
// it every connection opened for them.
type connSlot struct {
	mu  sync.Mutex
	ids []int64
	err error
}

type connSlotKey struct{}

func (s *connSlot) take() ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, err := s.ids, s.err
	s.ids, s.err = nil, nil
	return ids, err
}

// Track starts a tracker of the keys under prefix, calling invalidate
// with the keys Redis reports changed, and with nil when Redis reports
// that every key changed (FLUSHALL, FLUSHDB). invalidate runs on the
// tracker's goroutine and must not block. Losing tracking is not
// reported through invalidate: State changes, and copies trusted under
// the old state are trusted no more. Track returns nil for a cluster,
// where tracking would need a tracker per node and slot migrations
// followed: there, every lookup asks Redis.
func (c *Client) Track(prefix string, invalidate func(keys []string)) *Tracker {
	if c.opts == nil {
		return nil
	}
	uo := *c.opts
	// Classic RESP2 redirection: the invalidations arrive as messages on
	// a subscribed connection, which go-redis's PubSub reads.
	uo.Protocol = 2
	uo.PoolSize, uo.MinIdleConns, uo.MaxIdleConns = 1, 0, 1
	// The tracker's own patience, not a request's (see trackSetupTimeout).
	uo.ReadTimeout, uo.WriteTimeout = trackSetupTimeout, trackSetupTimeout
	uo.DialTimeout, uo.PoolTimeout = trackSetupTimeout, trackSetupTimeout
	uo.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		slot, _ := ctx.Value(connSlotKey{}).(*connSlot)
		if slot == nil {
			return nil
		}
		id, err := cn.ClientID(ctx).Result()
		slot.mu.Lock()
		defer slot.mu.Unlock()
		if err != nil {
			slot.err = err
			return err
		}
		slot.ids = append(slot.ids, id)
		return nil
	}
	var rdb *redis.Client
	if c.sentinel {
		rdb = redis.NewFailoverClient(uo.Failover())
	} else {
		rdb = redis.NewClient(uo.Simple())
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tracker{
		rdb:        rdb,
		prefix:     prefix,
		invalidate: invalidate,
		log:        c.log,
		name:       c.name,
		down:       c.outage,
		check:      c.checkIdle,
		epoch:      time.Now(),
		syncs:      map[uint64]chan struct{}{},
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	go t.run(ctx)
	return t
}

// outage reports that the breaker of a single server or Sentinel set-up
// is open or probing: it has logged an outage that is not over. A lost
// tracker is found out a heartbeat or more after the breaker opened, often
// while it probes.
func (c *Client) outage() bool {
	b := c.whole.Load()
	return c.down() || b != nil && b.stateName() == StateProbing
}

// State returns the tracker's generation and whether tracking is on and
// proved within trackFresh. A copy read while on may be trusted while
// State returns the same generation and on.
func (t *Tracker) State() (gen uint64, on bool) {
	if t == nil {
		return 0, false
	}
	s := t.state.Load()
	return s, s&1 == 1 && t.since(t.proven.Load()) <= trackFresh
}

// Epoch numbers the tracking sessions: it changes when a session starts,
// not when one is lost. A consumer that saw no invalidation of a key
// during one epoch knows that Redis reported no change to it while
// tracking was on; once a new session starts, what changed between the
// two is unknown.
func (t *Tracker) Epoch() uint64 {
	if t == nil {
		return 0
	}
	return (t.state.Load() + 1) / 2
}

func (t *Tracker) since(ns int64) time.Duration { return time.Since(t.epoch) - time.Duration(ns) }

// Mark returns a fence mark: Passed(mark) becomes true once the answer to
// a ping sent after the call has arrived, after which every invalidation
// passed on is for a change Redis made after the call. 0 (never passed)
// without a tracker.
func (t *Tracker) Mark() uint64 {
	if t == nil {
		return 0
	}
	return t.fseq.Load() + 1
}

// Passed reports whether the fence of mark has been passed (see Mark).
// Called from invalidate, it describes the keys being reported.
func (t *Tracker) Passed(mark uint64) bool {
	return t != nil && mark != 0 && t.fdone.Load() >= mark
}

// Sync returns once every invalidation Redis sent before the call has
// been passed on, or at once while tracking is off: it pings through the
// subscription, whose messages arrive in order.
func (t *Tracker) Sync(ctx context.Context) error {
	if t.Fence(ctx) || ctx.Err() == nil {
		return nil
	}
	return ctx.Err()
}

// Fence reports whether every invalidation of a change Redis made before
// the call has been passed on, waiting for it while ctx allows. It is
// false at once while no session runs, and when the session ends first.
func (t *Tracker) Fence(ctx context.Context) bool {
	if t == nil {
		return false
	}
	live := t.live.Load()
	if live == nil {
		return false
	}
	n := t.fseq.Add(1)
	ch := make(chan struct{})
	t.smu.Lock()
	t.syncs[n] = ch
	t.smu.Unlock()
	defer func() {
		t.smu.Lock()
		delete(t.syncs, n)
		t.smu.Unlock()
	}()
	if err := live.ps.Ping(ctx, fencePayload(n)); err != nil {
		return false
	}
	select {
	case <-ch:
		return true
	case <-live.ended:
		return t.fdone.Load() >= n
	case <-ctx.Done():
		return false
	}
}

func fencePayload(n uint64) string { return "tlsmgr-fence-" + strconv.FormatUint(n, 10) }

func parseFence(payload string) (uint64, bool) {
	s, ok := strings.CutPrefix(payload, "tlsmgr-fence-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// fenced records the answer to ping n: pings of several goroutines may be
// answered out of the order of their numbers, but each number was taken
// after the lower ones, so its answer passes their fences too.
func (t *Tracker) fenced(n uint64) {
	for {
		d := t.fdone.Load()
		if n <= d || t.fdone.CompareAndSwap(d, n) {
			break
		}
	}
	t.smu.Lock()
	for k, ch := range t.syncs {
		if k <= n {
			close(ch)
			delete(t.syncs, k)
		}
	}
	t.smu.Unlock()
}

// Close stops the tracker and closes its connections.
func (t *Tracker) Close() error {
	if t == nil {
		return nil
	}
	t.cancel()
	<-t.done
	return t.rdb.Close()
}

func (t *Tracker) setOn(on bool) {
	s := t.state.Load()
	if (s&1 == 1) == on {
		return
	}
	t.state.Store(s + 1)
}

func (t *Tracker) run(ctx context.Context) {
	defer close(t.done)
	backoff := trackMinBackoff
	for {
		start := time.Now()
		wasOn, err := t.session(ctx)
		t.setOn(false)
		if ctx.Err() != nil {
			return
		}
		// Redis may be gone with nobody asking it: the request path's
		// own check tells the breaker.
		t.check(true)
		if wasOn && !t.down() {
			// One line per loss, unless the breaker has reported the
			// outage already; none for each failed attempt.
			maillog.Warnf(t.log, "Redis %s: invalidation tracking lost (%v); every lookup asks Redis until it is back", t.name, err)
			t.lostLogged = true
		}
		if time.Since(start) > 10*trackHeartbeat {
			backoff = trackMinBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, trackMaxBackoff)
	}
}

func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

// round is one proof of liveness: ping n through s, sent at sent, whose
// answer is awaited; c has already answered its ping.
type round struct {
	n    uint64
	sent time.Time
}

// session sets tracking up and relays invalidations until something goes
// wrong. Tracking is on from the first complete round until it returns,
// which says whether it got that far.
func (t *Tracker) session(ctx context.Context) (wasOn bool, err error) {
	slot := &connSlot{}
	ctx = context.WithValue(ctx, connSlotKey{}, slot)
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, trackSetupTimeout)
	}

	ps := t.rdb.Subscribe(ctx)
	defer ps.Close()
	cctx, cancel := call()
	err = ps.Subscribe(cctx, invalidateChannel)
	cancel()
	if err != nil {
		return false, err
	}
	if err := t.expectSubscription(ctx, ps); err != nil {
		return false, err
	}
	ids, err := slot.take()
	if err != nil || len(ids) != 1 {
		return false, fmt.Errorf("subscriber connection not identified (%d connections, %v)", len(ids), err)
	}
	subscriber := ids[0]

	cn := t.rdb.Conn()
	defer cn.Close()
	cctx, cancel = call()
	// The pool may hand back the connection of an earlier session, still
	// tracking (Redis refuses a second, overlapping prefix): off first.
	err = cn.Do(cctx, "CLIENT", "TRACKING", "OFF").Err()
	if err == nil {
		err = cn.Do(cctx, "CLIENT", "TRACKING", "ON", "REDIRECT", subscriber, "BCAST", "PREFIX", t.prefix).Err()
	}
	cancel()
	if err != nil {
		return false, err
	}
	if _, err := slot.take(); err != nil {
		return false, err
	}
	live := &liveSession{ps: ps, ended: make(chan struct{})}
	t.live.Store(live)
	defer func() {
		t.live.Store(nil)
		t.setOn(false)
		close(live.ended)
	}()

	// prove starts a round: s's ping first, so that c's answer, which
	// says c was tracking all along, comes after it.
	prove := func() (round, error) {
		r := round{n: t.fseq.Add(1), sent: time.Now()}
		cctx, cancel := call()
		defer cancel()
		if err := ps.Ping(cctx, fencePayload(r.n)); err != nil {
			return r, err
		}
		if err := cn.Ping(cctx).Err(); err != nil {
			return r, fmt.Errorf("the tracking connection: %w", err)
		}
		return r, nil
	}
	pending, err := prove()
	if err != nil {
		return false, err
	}
	next := pending.sent.Add(trackHeartbeat)
	for {
		// Whatever arrives, a round is due every heartbeat and its
		// answer within trackPongTimeout: a stream of messages from a
		// PUBLISH keeps neither at bay.
		now := time.Now()
		if pending.n == 0 && !now.Before(next) {
			if pending, err = prove(); err != nil {
				return wasOn, err
			}
			next = pending.sent.Add(trackHeartbeat)
			continue
		}
		wait := next.Sub(now)
		if pending.n != 0 {
			wait = pending.sent.Add(trackPongTimeout).Sub(now)
			if wait <= 0 {
				return wasOn, fmt.Errorf("no answer to a ping through the subscriber connection within %v", trackPongTimeout)
			}
		}
		msg, err := ps.ReceiveTimeout(ctx, max(wait, time.Millisecond))
		if ids, serr := slot.take(); len(ids) != 0 || serr != nil {
			// go-redis replaced a connection: the new one is not
			// subscribed (or not tracking) as Redis knows it.
			return wasOn, errors.New("a tracking connection was replaced")
		}
		if err != nil {
			if ctx.Err() != nil {
				return wasOn, ctx.Err()
			}
			if isNullPayload(err) {
				// After FLUSHALL Redis sends an invalidation with a
				// null list, which go-redis reads in full and then
				// fails to convert: the subscription is intact.
				t.invalidate(nil)
				continue
			}
			if isTimeout(err) {
				continue // the checks at the top decide
			}
			return wasOn, err
		}
		switch m := msg.(type) {
		case *redis.Message:
			if m.Channel != invalidateChannel {
				continue
			}
			switch {
			case len(m.PayloadSlice) > 0:
				t.invalidate(m.PayloadSlice)
			case m.Payload != "":
				t.invalidate([]string{m.Payload})
			default:
				// A null list: Redis flushed everything.
				t.invalidate(nil)
			}
		case *redis.Pong:
			n, ok := parseFence(m.Payload)
			if !ok {
				continue
			}
			t.fenced(n)
			if n == pending.n {
				t.proven.Store(int64(pending.sent.Sub(t.epoch)))
				pending = round{}
				// Redis answers again: a breaker still open probes
				// now, not at the next request.
				t.check(false)
				if !wasOn {
					wasOn = true
					t.setOn(true)
					if t.lostLogged {
						t.lostLogged = false
						maillog.Infof(t.log, "Redis %s: invalidation tracking on again", t.name)
					}
				}
			}
		case *redis.Subscription:
			// A resubscription after a reconnect the slot did not see.
			return wasOn, errors.New("the subscriber connection was replaced")
		}
	}
}

// isNullPayload recognises go-redis's error for a message whose payload
// is null; it has no error value of its own to compare with.
func isNullPayload(err error) bool {
	return strings.HasSuffix(err.Error(), "unsupported pubsub message payload: <nil>")
}

func (t *Tracker) expectSubscription(ctx context.Context, ps *redis.PubSub) error {
	msg, err := ps.ReceiveTimeout(ctx, trackSetupTimeout)
	if err != nil {
		return err
	}
	if sub, ok := msg.(*redis.Subscription); !ok || sub.Channel != invalidateChannel {
		return fmt.Errorf("unexpected %T while subscribing", msg)
	}
	return nil
}

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
// redirection to s. If either is lost Redis stops telling, silently; so
// the tracker notices any new connection of either (go-redis reconnects
// on its own), pings both after a quarter of a second of silence, and on
// any doubt turns itself off (consumers stop trusting their copies at
// once) and starts again with back-off. Off is the safe state: every
// lookup then asks Redis.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// invalidateChannel is where Redis sends invalidations in RESP2.
const invalidateChannel = "__redis__:invalidate"

// Tracker timing: how long set-up calls may take (nobody waits on them),
// how long the subscription may be silent before a ping, and the back-off
// between attempts.
const (
	trackSetupTimeout = time.Second
	trackHeartbeat    = 250 * time.Millisecond
	// trackPongTimeout is how long a ping's answer may take: a loaded
	// host must not make the tracker give up on a healthy Redis.
	trackPongTimeout = time.Second
	trackMinBackoff  = 100 * time.Millisecond
	trackMaxBackoff  = 5 * time.Second
)

// Tracker keeps Redis reporting changes to the keys under one prefix.
type Tracker struct {
	rdb        *redis.Client
	prefix     string
	invalidate func(keys []string)
	log        Logger
	name       string
	down       func() bool // the breaker is open
	lostLogged bool        // the run goroutine's

	// state is the generation times two, plus one while tracking is on:
	// a copy read while on stays trustworthy only as long as the state
	// does not change.
	state atomic.Uint64

	// live is the subscription while tracking is on; Sync pings through
	// it.
	live    atomic.Pointer[liveSession]
	smu     sync.Mutex
	syncs   map[string]chan struct{} // by ping payload
	syncSeq uint64

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
// with the keys Redis reports changed, and with nil whenever every copy
// must be dropped (tracking lost, FLUSHALL). invalidate runs on the
// tracker's goroutine and must not block. Track returns nil for a
// cluster, where tracking would need a tracker per node and slot
// migrations followed: there, every lookup asks Redis.
func (c *Client) Track(prefix string, invalidate func(keys []string)) *Tracker {
	if c.opts == nil {
		return nil
	}
	uo := *c.opts
	// Classic RESP2 redirection: the invalidations arrive as messages on
	// a subscribed connection, which go-redis's PubSub reads.
	uo.Protocol = 2
	uo.PoolSize, uo.MinIdleConns, uo.MaxIdleConns = 1, 0, 1
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
		down:       c.down,
		syncs:      map[string]chan struct{}{},
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	go t.run(ctx)
	return t
}

// State returns the tracker's generation and whether tracking is on. A
// copy read while on may be trusted while State returns the same value.
func (t *Tracker) State() (gen uint64, on bool) {
	if t == nil {
		return 0, false
	}
	s := t.state.Load()
	return s, s&1 == 1
}

// Sync returns once every invalidation Redis sent before the call has
// been passed on, or at once while tracking is off: it pings through the
// subscription, whose messages arrive in order.
func (t *Tracker) Sync(ctx context.Context) error {
	if t == nil {
		return nil
	}
	live := t.live.Load()
	if live == nil {
		return nil
	}
	t.smu.Lock()
	t.syncSeq++
	token := "sync-" + strconv.FormatUint(t.syncSeq, 10)
	ch := make(chan struct{})
	t.syncs[token] = ch
	t.smu.Unlock()
	defer func() {
		t.smu.Lock()
		delete(t.syncs, token)
		t.smu.Unlock()
	}()
	if err := live.ps.Ping(ctx, token); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-live.ended:
		// Tracking is off: no copy is trusted any more.
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
	if !on {
		t.invalidate(nil)
	}
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
		if wasOn && !t.down() {
			// One line per loss, unless the breaker has reported the
			// outage already; none for each failed attempt.
			t.log.Warn("Redis %s: invalidation tracking lost (%v); every lookup asks Redis until it is back", t.name, err)
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

// session sets tracking up and relays invalidations until something goes
// wrong. Tracking is on only between the set-up's success and its return,
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
	t.setOn(true)
	live := &liveSession{ps: ps, ended: make(chan struct{})}
	t.live.Store(live)
	defer func() {
		t.live.Store(nil)
		t.setOn(false)
		close(live.ended)
	}()
	if t.lostLogged {
		t.lostLogged = false
		t.log.Info("Redis %s: invalidation tracking on again", t.name)
	}

	pinged := false
	for {
		wait := trackHeartbeat
		if pinged {
			wait = trackPongTimeout
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ids, serr := slot.take(); len(ids) != 0 || serr != nil {
			// go-redis replaced a connection: the new one is not
			// subscribed (or not tracking) as Redis knows it.
			return true, errors.New("a tracking connection was replaced")
		}
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if isNullPayload(err) {
				// After FLUSHALL Redis sends an invalidation with a
				// null list, which go-redis reads in full and then
				// fails to convert: the subscription is intact.
				t.invalidate(nil)
				continue
			}
			if !isTimeout(err) || pinged {
				return true, err
			}
			// Silent for a heartbeat: both connections must answer.
			cctx, cancel := call()
			err := ps.Ping(cctx)
			if err == nil {
				err = cn.Ping(cctx).Err()
			}
			cancel()
			if err != nil {
				return true, err
			}
			pinged = true
			continue
		}
		pinged = false
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
			t.smu.Lock()
			if ch, ok := t.syncs[m.Payload]; ok {
				close(ch)
				delete(t.syncs, m.Payload)
			}
			t.smu.Unlock()
		case *redis.Subscription:
			// A resubscription after a reconnect the slot did not see.
			return true, errors.New("the subscriber connection was replaced")
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

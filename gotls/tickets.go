package gotls

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// TicketKeyInfo is the HKDF info string of the derivation of Go's session
// ticket keys from the daemon's ticket keys. Every process that derives
// with it from the same ring gets the same Go keys.
const TicketKeyInfo = "gotlsmgr crypto/tls session ticket key"

// Refresh schedule of Tickets.
const (
	// ticketRefreshMax is the longest wait between two refreshes: a
	// restarted daemon or another daemon of the fleet may have changed
	// the ring without the current key expiring.
	ticketRefreshMax = time.Minute
	// ticketRetryMin is the first wait after a failed refresh; it doubles
	// up to ticketRefreshMax.
	ticketRetryMin = time.Second
	// ticketMaxKeys bounds the keys handed to crypto/tls, which tries
	// them all in turn on every resumption. The daemon's ring decrypts
	// with two at a time.
	ticketMaxKeys = 4
)

// Tickets keeps the session ticket keys of a tls.Config in step with the
// ticket-key ring of a tlsmgr daemon, so that every Go server sharing the
// daemon (or a fleet of daemons sharing one ring) issues tickets the
// others accept. It is made by ShareTicketKeys.
//
// The first key given to crypto/tls is the daemon's current key, which
// encrypts new tickets; the others are the keys seen before that the
// daemon says still decrypt. Keys are derived with HKDF-SHA256 (secret
// the key's AES and HMAC keys, salt its name, info TicketKeyInfo): Go's
// tickets are not OpenSSL's, so Postfix and Go share a key source, not
// tickets.
//
// When the daemon does not answer, the keys last applied stay and the
// Daemon logs it once; handshakes never wait for the daemon. The current
// key goes on encrypting past its expiry, but not for longer than the
// ring's rotation period (see localAfterLocked): then new tickets get a key of
// this process's own, replaced at the same period, which only this
// process accepts. Once the daemon answers, its current key encrypts
// again, and the keys of the process's own still decrypt for a period.
type Tickets struct {
	cfg *tls.Config
	d   *Daemon

	refresh sync.Mutex  // one refresh at a time
	mu      sync.Mutex  // guards keys, period
	keys    []ticketKey // current first; nil until the first success
	period  int64       // seconds between two current keys' expiries, 0 until seen
	now     func() time.Time
	log     *slog.Logger

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// ticketKey is one daemon key as Tickets keeps it: its name, its expiry,
// when it was first seen here and the derived Go key (the daemon's
// material is wiped at once); or, local, a random key of this process's
// own, made while the daemon did not answer, which encrypts until expiry.
type ticketKey struct {
	name   [proto.TicketNameLen]byte
	expiry int64
	seen   int64
	local  bool
	goKey  [32]byte
}

// ShareTicketKeys makes cfg's session ticket keys those of the daemon's
// ring and keeps them fresh until Close. It tries one refresh before it
// returns; if that fails, cfg keeps Go's own ticket keys (and their
// rotation) until a refresh gets through. cfg must not be copied after.
func ShareTicketKeys(cfg *tls.Config, d *Daemon) *Tickets {
	return shareTicketKeys(cfg, d, time.Now)
}

func shareTicketKeys(cfg *tls.Config, d *Daemon, now func() time.Time) *Tickets {
	t := &Tickets{cfg: cfg, d: d, now: now, log: d.log, stop: make(chan struct{}), done: make(chan struct{})}
	err := t.Refresh(context.Background())
	go t.run(err)
	return t
}

// DeriveTicketKey returns the crypto/tls session ticket key derived from
// the daemon key k.
func DeriveTicketKey(k *proto.TicketKey) [32]byte {
	var secret [proto.TicketKeyLen + proto.TicketMACLen]byte
	copy(secret[:], k.AES[:])
	copy(secret[proto.TicketKeyLen:], k.HMAC[:])
	b, err := hkdf.Key(sha256.New, secret[:], k.Name[:], TicketKeyInfo, 32)
	clear(secret[:])
	if err != nil {
		panic("gotls: hkdf: " + err.Error()) // cannot happen for 32 bytes of SHA-256
	}
	var out [32]byte
	copy(out[:], b)
	clear(b)
	return out
}

// Keys returns how many keys cfg has from Tickets: the daemon's and, after
// a long outage, this process's own (0 before the first successful
// refresh).
func (t *Tickets) Keys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// Close stops the refreshes. cfg keeps the keys last applied.
func (t *Tickets) Close() error {
	t.closeOnce.Do(func() { close(t.stop) })
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.keys {
		clear(t.keys[i].goKey[:])
	}
	t.keys = nil
	return nil
}

// Refresh asks the daemon for its current key and whether the keys seen
// before still decrypt, and applies the result to cfg. Each call to the
// daemon has the Daemon's deadline; ctx can end the refresh sooner. On
// an error the keys already applied stay.
func (t *Tickets) Refresh(ctx context.Context) error {
	t.refresh.Lock()
	defer t.refresh.Unlock()

	var cur proto.TicketKey
	err := t.call(ctx, nil, &cur)
	if err != nil {
		return err
	}
	now := t.now().Unix()
	fresh := ticketKey{name: cur.Name, expiry: cur.Expiry, seen: now, goKey: DeriveTicketKey(&cur)}
	cur.Wipe()

	t.mu.Lock()
	old := append([]ticketKey(nil), t.keys...)
	if len(old) > 0 && !old[0].local && old[0].name != fresh.name && fresh.expiry > old[0].expiry {
		t.period = fresh.expiry - old[0].expiry
	}
	period := t.localAfterLocked(fresh)
	t.mu.Unlock()

	next := []ticketKey{fresh}
	var errs []error
	for i := range old {
		k := &old[i]
		if k.name == fresh.name && !k.local {
			next[0].seen = k.seen
			continue
		}
		if len(next) == ticketMaxKeys {
			break
		}
		if k.local {
			// Tickets of the outage: they decrypt here for a period.
			if now < k.expiry+period {
				next = append(next, *k)
			}
			continue
		}
		var still proto.TicketKey
		err := t.call(ctx, k.name[:], &still)
		still.Wipe()
		switch {
		case err == nil:
			next = append(next, *k)
		case errors.Is(err, client.ErrNotFound):
			// No longer decrypts: dropped.
		default:
			// Not known either way: keep it for now.
			next = append(next, *k)
			errs = append(errs, err)
		}
	}

	t.mu.Lock()
	t.applyLocked(next)
	t.mu.Unlock()
	for i := range old {
		clear(old[i].goKey[:])
	}
	return errors.Join(errs...)
}

// applyLocked gives cfg the keys next (not empty) and keeps them; t.mu is
// held.
func (t *Tickets) applyLocked(next []ticketKey) {
	goKeys := make([][32]byte, len(next))
	for i := range next {
		goKeys[i] = next[i].goKey
	}
	t.cfg.SetSessionTicketKeys(goKeys) // copies them
	clear(goKeys)
	for i := range t.keys {
		clear(t.keys[i].goKey[:])
	}
	t.keys = next
}

// localAfterLocked is how long past its expiry the daemon's key k may go
// on encrypting while the daemon does not answer, and how long a key of
// this process's own encrypts: the ring's rotation period as seen here,
// or before a rotation was seen, k's life since it was first seen; at
// least ticketRefreshMax. The daemon's keys decrypt for a period past
// their expiry, so tickets issued in that time still resume across the
// fleet. t.mu is held.
func (t *Tickets) localAfterLocked(k ticketKey) int64 {
	p := t.period
	if p == 0 {
		p = k.expiry - k.seen
	}
	return max(p, int64(ticketRefreshMax/time.Second))
}

// fallBack runs after a failed refresh: once the key encrypting has been
// used as long as localAfterLocked allows, a new random key of this
// process's own takes its place, the keys before it still decrypting
// (within ticketMaxKeys). It does nothing while cfg has Go's own keys.
func (t *Tickets) fallBack() {
	t.refresh.Lock() // a Refresh under way would apply its keys over these
	defer t.refresh.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.keys) == 0 {
		return
	}
	cur, now := t.keys[0], t.now().Unix()
	period := t.localAfterLocked(cur)
	switch {
	case cur.local && now < cur.expiry:
		return
	case !cur.local && now < cur.expiry+period:
		return
	case !cur.local:
		t.log.Info("gotls: tlsmgr daemon not answering since the shared session ticket key expired; new tickets use a key of this process's own, accepted only here, until it answers")
	}
	local := ticketKey{expiry: now + period, seen: now, local: true}
	rand.Read(local.goKey[:]) // never fails (crypto/rand, Go 1.24+)
	next := []ticketKey{local}
	for _, k := range t.keys {
		if len(next) == ticketMaxKeys {
			break
		}
		next = append(next, k)
	}
	t.applyLocked(next)
}

// call asks the daemon for the key named name (nil: the current key).
func (t *Tickets) call(ctx context.Context, name []byte, out *proto.TicketKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return t.d.do(func(dctx context.Context, c *client.Client) error {
		dctx, cancel := mergeCancel(dctx, ctx)
		defer cancel()
		k, err := c.TicketKey(dctx, name)
		*out = k
		return err
	})
}

// mergeCancel is a ctx that ends when a or b does; it keeps a's values and
// the earlier deadline.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	if b.Done() == nil {
		return a, func() {}
	}
	ctx, cancel := context.WithCancelCause(a)
	stop := context.AfterFunc(b, func() { cancel(context.Cause(b)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// run refreshes until Close: just after the current key stops encrypting,
// and at least every ticketRefreshMax; sooner, with backoff, after a
// failure.
func (t *Tickets) run(err error) {
	defer close(t.done)
	retry := ticketRetryMin
	for {
		var wait time.Duration
		if err != nil {
			wait = jitter(retry)
			retry = min(2*retry, ticketRefreshMax)
		} else {
			retry = ticketRetryMin
			wait = t.untilRotation()
		}
		timer := time.NewTimer(wait)
		select {
		case <-t.stop:
			timer.Stop()
			return
		case <-timer.C:
		}
		err = t.Refresh(context.Background())
		if err != nil {
			t.fallBack()
		}
	}
}

// untilRotation is the wait before the next regular refresh: until the
// second after the current key's Expiry (the daemon makes a new key when
// asked at or after it), jittered so that servers do not all ask at the
// same instant, capped by ticketRefreshMax.
func (t *Tickets) untilRotation() time.Duration {
	t.mu.Lock()
	var expiry int64
	if len(t.keys) > 0 {
		expiry = t.keys[0].expiry
	}
	t.mu.Unlock()
	wait := time.Unix(expiry, 0).Sub(t.now())
	if wait > ticketRefreshMax {
		return jitter(ticketRefreshMax)
	}
	if wait < 0 {
		// The daemon gave a key that no longer encrypts (its clock
		// is behind ours): ask again soon, not in a loop.
		return jitter(5 * time.Second)
	}
	return wait + time.Duration(mrand.Int64N(int64(time.Second))) + 10*time.Millisecond
}

// jitter is d less up to a tenth.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(mrand.Int64N(int64(d/10)+1))
}

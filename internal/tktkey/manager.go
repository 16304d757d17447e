package tktkey

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// ErrDisabled is returned when the smtpd session timeout is 0: Postfix
// then refuses every tktkey request.
var ErrDisabled = errors.New("tktkey: session tickets are disabled")

// ErrUnknownKey is returned for a decryption key name that is not (or no
// longer) in the ring.
var ErrUnknownKey = errors.New("tktkey: no such key")

// Manager hands out ticket keys. With T the smtpd session cache timeout,
// each key encrypts for T/2 and decrypts for T/2 more.
//
// The keys live in one of two rings: a local one (Postfix's lazy
// rotation, keys in memory, the ring saved on every rotation if there is
// a Store; see local.go), or a fleet's (keys per epoch shared through an
// EpochStore; see fleet.go). The Manager answers for disabled tickets
// and counts what it hands out; the ring does the rest.
type Manager struct {
	disabled bool
	half     int64 // T/2 in whole seconds, as Postfix computes it
	now      func() time.Time
	ring     keyRing
	counts   keyCounts
}

// keyRing holds a Manager's keys and decides when they rotate. It is
// asked for keys, refreshed and run only while tickets are enabled.
type keyRing interface {
	// encrypting returns the key to issue tickets with now, making one
	// if the ring holds none that encrypts.
	encrypting(ctx context.Context) (proto.TicketKey, error)
	// decrypting returns the key named name if it still decrypts, or
	// ErrUnknownKey.
	decrypting(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error)
	// refresh loads and makes keys ahead of the requests that will want
	// them; a ring that rotates on demand has nothing to do.
	refresh(ctx context.Context) error
	// run refreshes the ring on its schedule until ctx is done or the
	// ring is closed; a ring with no schedule returns at once.
	run(ctx context.Context)
	// keys, digest and stats describe the ring, never its secrets.
	keys() []KeyInfo
	digest() string
	stats(s *Stats)
	// close wipes the keys held.
	close()
}

// ringParams are what every ring needs to make keys and age them.
type ringParams struct {
	half int64 // T/2 in whole seconds
	rand io.Reader
	now  func() time.Time
	log  *slog.Logger // nil discards
}

func (p *ringParams) info(format string, args ...any) { maillog.Infof(p.log, format, args...) }
func (p *ringParams) warn(format string, args ...any) { maillog.Warnf(p.log, format, args...) }

// fill gives k a fresh name and fresh secrets from the pool.
func (p *ringParams) fill(k *proto.TicketKey) error {
	for _, part := range [][]byte{k.Name[:], k.AES[:], k.HMAC[:]} {
		if _, err := io.ReadFull(p.rand, part); err != nil {
			k.Wipe()
			return err
		}
	}
	return nil
}

// Options configure a Manager.
type Options struct {
	Timeout time.Duration // smtpd_tls_session_cache_timeout, sanitised; 0 disables
	Rand    io.Reader     // the PRNG pool; safe for concurrent use with a Fleet
	Store   Store         // nil: keys live in memory only
	Log     *slog.Logger  // nil discards
	Now     func() time.Time

	// Fleet shares the ring with other daemons; exclusive with Store.
	Fleet EpochStore
	// StoreTimeout bounds one refresh of the fleet ring (all its store
	// calls); 0 means DefaultStoreTimeout. Requests never wait for it.
	StoreTimeout time.Duration
	// LookupTimeout bounds a by-name lookup whose request context has no
	// deadline of its own; 0 means DefaultLookupTimeout.
	LookupTimeout time.Duration
	// After is the timer of Run's schedule (time.After if nil).
	After func(time.Duration) <-chan time.Time
}

// NewManager returns a manager, loading the ring from the store if any.
// With a Fleet it makes one refresh of the ring, bounded by StoreTimeout;
// a store that does not answer is logged, not fatal: mail goes on with
// local keys until Run gets through.
func NewManager(ctx context.Context, o Options) (*Manager, error) {
	p := ringParams{
		half: int64(o.Timeout/time.Second) / 2,
		rand: o.Rand,
		now:  o.Now,
		log:  o.Log,
	}
	if p.now == nil {
		p.now = time.Now
	}
	m := &Manager{disabled: o.Timeout <= 0, half: p.half, now: p.now}
	if o.Fleet == nil {
		r, err := newLocalRing(ctx, p, o.Store)
		if err != nil {
			return nil, err
		}
		m.ring = r
		return m, nil
	}
	if o.Store != nil {
		return nil, errors.New("tktkey: a fleet ring and a key store are exclusive")
	}
	if !m.disabled && p.half < 1 {
		return nil, errors.New("tktkey: a fleet ring needs a session timeout of at least 2s")
	}
	m.ring = newFleetRing(p, o)
	_ = m.Refresh(ctx) // logged by Refresh
	return m, nil
}

// Encrypting returns the key for issuing a new ticket, making a new one
// (and retiring the oldest) when the current key no longer encrypts.
func (m *Manager) Encrypting(ctx context.Context) (proto.TicketKey, error) {
	k, err := m.encrypting(ctx)
	if err == nil {
		m.counts.issued(k)
	}
	return k, err
}

func (m *Manager) encrypting(ctx context.Context) (proto.TicketKey, error) {
	if m.disabled {
		return proto.TicketKey{}, ErrDisabled
	}
	return m.ring.encrypting(ctx)
}

// Decrypting returns the key named name if it may still decrypt tickets.
// With a Fleet, a name not in the ring may be looked up in the store,
// within ctx's deadline.
func (m *Manager) Decrypting(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	k, err := m.decrypting(ctx, name)
	switch {
	case err == nil:
		m.counts.found.Add(1)
	case errors.Is(err, ErrUnknownKey):
		m.counts.unknown.Add(1)
	}
	return k, err
}

func (m *Manager) decrypting(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	if m.disabled {
		return proto.TicketKey{}, ErrDisabled
	}
	return m.ring.decrypting(ctx, name)
}

// Refresh brings the ring up to date ahead of the requests. With a Fleet
// it loads the previous, current and next epochs' keys from the store and
// creates the current and next ones where missing (offering back a key
// held here if the store lost it, or this member's local key). It is
// bounded by StoreTimeout and holds no lock that requests take while it
// waits for the store. Run calls it; it is exported for the initial load
// and for tests. Without a Fleet, or with tickets disabled, it does
// nothing.
func (m *Manager) Refresh(ctx context.Context) error {
	if m.disabled {
		return nil
	}
	return m.ring.refresh(ctx)
}

// Run keeps the fleet ring loaded until ctx is done or the manager is
// closed: a refresh a quarter and three quarters into every epoch (plus a
// jitter of up to min(H/16, 30s) drawn from the pool, so that members do
// not all call at once), and after a failure again in 1s, 2s, 4s ... up
// to 30s. It returns at once without a Fleet.
func (m *Manager) Run(ctx context.Context) {
	if m.disabled {
		return
	}
	m.ring.run(ctx)
}

// Close wipes the keys held in memory. With a Fleet it also stops Run,
// and the manager answers as if tickets were disabled from then on.
func (m *Manager) Close() { m.ring.close() }

package tktkey

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// ErrDisabled is returned when the smtpd session timeout is 0: Postfix
// then refuses every tktkey request.
var ErrDisabled = errors.New("tktkey: session tickets are disabled")

// ErrUnknownKey is returned for a decryption key name that is not (or no
// longer) in the ring.
var ErrUnknownKey = errors.New("tktkey: no such key")

// Logger is the part of the daemon's logger the manager needs.
type Logger interface {
	Warn(format string, args ...any)
}

// Manager hands out ticket keys. With T the smtpd session cache timeout,
// each key encrypts for T/2 and decrypts for T/2 more.
//
// It runs in one of three modes: no store (Postfix's lazy rotation, keys
// in memory), a Store (the same, the ring saved on every rotation), or a
// Fleet (keys per epoch shared through an EpochStore; see fleet.go).
type Manager struct {
	disabled bool
	half     int64 // T/2 in whole seconds, as Postfix computes it
	rand     io.Reader
	store    Store
	log      Logger
	now      func() time.Time

	mu   sync.Mutex
	ring Ring

	fleetState
	counts keyCounts
}

// Options configure a Manager.
type Options struct {
	Timeout time.Duration // smtpd_tls_session_cache_timeout, sanitised; 0 disables
	Rand    io.Reader     // the PRNG pool; safe for concurrent use with a Fleet
	Store   Store         // nil: keys live in memory only
	Log     Logger        // an Info method, if it has one, gets the good news
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
	m := &Manager{
		disabled: o.Timeout <= 0,
		half:     int64(o.Timeout/time.Second) / 2,
		rand:     o.Rand,
		store:    o.Store,
		log:      o.Log,
		now:      o.Now,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if o.Fleet != nil {
		if o.Store != nil {
			return nil, errors.New("tktkey: a fleet ring and a key store are exclusive")
		}
		if !m.disabled && m.half < 1 {
			return nil, errors.New("tktkey: a fleet ring needs a session timeout of at least 2s")
		}
		m.initFleet(o)
		if !m.disabled {
			_ = m.Refresh(ctx) // logged by Refresh
		}
		return m, nil
	}
	if m.store != nil {
		r, err := m.store.Load(ctx)
		if err != nil {
			return nil, err
		}
		m.ring = r
	}
	return m, nil
}

// Encrypting returns the key for issuing a new ticket, making a new one
// (and retiring the oldest) when the current key no longer encrypts.
func (m *Manager) Encrypting(ctx context.Context) (Key, error) {
	k, err := m.encrypting(ctx)
	if err == nil {
		m.counts.issued(k)
	}
	return k, err
}

func (m *Manager) encrypting(ctx context.Context) (Key, error) {
	if m.disabled {
		return Key{}, ErrDisabled
	}
	if m.fleet != nil {
		return m.fleetEncrypting()
	}
	now := m.now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.ring.Current; cur != nil && cur.Expiry > now {
		return *cur, nil
	}
	k := new(Key)
	if err := m.fill(k); err != nil {
		return Key{}, err
	}
	k.Expiry = now + m.half - 1
	m.rotate(k)
	if m.store != nil {
		if err := m.store.Save(ctx, m.ring); err != nil && m.log != nil {
			m.log.Warn("cannot save session ticket keys: %v", err)
		}
	}
	return *k, nil
}

// Decrypting returns the key named name if it may still decrypt tickets.
// With a Fleet, a name not in the ring may be looked up in the store,
// within ctx's deadline.
func (m *Manager) Decrypting(ctx context.Context, name [NameLen]byte) (Key, error) {
	k, err := m.decrypting(ctx, name)
	switch {
	case err == nil:
		m.counts.found.Add(1)
	case errors.Is(err, ErrUnknownKey):
		m.counts.unknown.Add(1)
	}
	return k, err
}

func (m *Manager) decrypting(ctx context.Context, name [NameLen]byte) (Key, error) {
	if m.disabled {
		return Key{}, ErrDisabled
	}
	if m.fleet != nil {
		return m.fleetDecrypting(ctx, name)
	}
	now := m.now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range []*Key{m.ring.Current, m.ring.Previous} {
		if k != nil && k.Name == name {
			if k.Expiry+m.half > now {
				return *k, nil
			}
			break
		}
	}
	return Key{}, ErrUnknownKey
}

// rotate makes k current unless the current key outlives it (a clock that
// went backwards), keeping the ring sorted with Current expiring last, as
// Postfix does. The key that drops out is wiped.
func (m *Manager) rotate(k *Key) {
	cur, prev := m.ring.Current, m.ring.Previous
	if cur == nil {
		// A loaded ring may hold only a previous key: it still decrypts.
		m.ring.Current = k
		return
	}
	if prev != nil {
		prev.Wipe()
	}
	if cur.Expiry < k.Expiry {
		m.ring.Previous, m.ring.Current = cur, k
	} else {
		m.ring.Previous = k
	}
}

func (m *Manager) fill(k *Key) error {
	for _, part := range [][]byte{k.Name[:], k.AES[:], k.HMAC[:]} {
		if _, err := io.ReadFull(m.rand, part); err != nil {
			k.Wipe()
			return err
		}
	}
	return nil
}

// Close wipes the keys held in memory. With a Fleet it also stops Run,
// and the manager answers as if tickets were disabled from then on.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range []*Key{m.ring.Current, m.ring.Previous} {
		if k != nil {
			k.Wipe()
		}
	}
	m.ring = Ring{}
	if m.fleet != nil {
		m.closeFleet()
	}
}

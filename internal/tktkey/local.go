package tktkey

import (
	"context"
	"sync"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// localRing is the ring of a daemon on its own, as Postfix's tlsmgr keeps
// it: the current key, made when the one before it stops encrypting, and
// the previous one, which still decrypts. With a Store the ring is loaded
// at start and saved on every rotation; without one it lives in memory.
type localRing struct {
	ringParams
	store Store // nil: memory only

	mu   sync.Mutex
	held Ring
}

// newLocalRing returns a local ring, loaded from store if there is one.
func newLocalRing(ctx context.Context, p ringParams, store Store) (*localRing, error) {
	r := &localRing{ringParams: p, store: store}
	if store != nil {
		held, err := store.Load(ctx)
		if err != nil {
			return nil, err
		}
		r.held = held
	}
	return r, nil
}

// encrypting makes a new key (and retires the oldest) when the current
// key no longer encrypts, saving the ring if there is a store.
func (r *localRing) encrypting(ctx context.Context) (proto.TicketKey, error) {
	now := r.now().Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.held.Current; cur != nil && cur.Expiry > now {
		return *cur, nil
	}
	k := new(proto.TicketKey)
	if err := r.fill(k); err != nil {
		return proto.TicketKey{}, err
	}
	k.Expiry = now + r.half - 1
	r.rotate(k)
	if r.store != nil {
		if err := r.store.Save(ctx, r.held); err != nil {
			r.warn("cannot save session ticket keys: %v", err)
		}
	}
	return *k, nil
}

func (r *localRing) decrypting(_ context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	now := r.now().Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range []*proto.TicketKey{r.held.Current, r.held.Previous} {
		if k != nil && k.Name == name {
			if k.Expiry+r.half > now {
				return *k, nil
			}
			break
		}
	}
	return proto.TicketKey{}, ErrUnknownKey
}

// rotate makes k current unless the current key outlives it (a clock that
// went backwards), keeping the ring sorted with Current expiring last, as
// Postfix does. The key that drops out is wiped. It runs under r.mu.
func (r *localRing) rotate(k *proto.TicketKey) {
	cur, prev := r.held.Current, r.held.Previous
	if cur == nil {
		// A loaded ring may hold only a previous key: it still decrypts.
		r.held.Current = k
		return
	}
	if prev != nil {
		prev.Wipe()
	}
	if cur.Expiry < k.Expiry {
		r.held.Previous, r.held.Current = cur, k
	} else {
		r.held.Previous = k
	}
}

// refresh has nothing to do: a local ring rotates when a key is asked for.
func (r *localRing) refresh(context.Context) error { return nil }

// run returns at once: a local ring has no schedule.
func (r *localRing) run(context.Context) {}

// close wipes the keys. The ring starts afresh if asked for a key again.
func (r *localRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range []*proto.TicketKey{r.held.Current, r.held.Previous} {
		if k != nil {
			k.Wipe()
		}
	}
	r.held = Ring{}
}

package tktkey

import (
	"context"
	"time"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// Store persists the key ring of a daemon on its own so that its keys
// survive restarts (keyfile). It is optional: a nil Store keeps keys in
// memory only (the Postfix behaviour). Daemons share keys through an
// EpochStore instead (Options.Fleet).
type Store interface {
	// Load returns the saved ring, or an empty ring and no error when
	// nothing is saved.
	Load(ctx context.Context) (Ring, error)
	// Save replaces the saved ring. It must not keep r or its keys
	// after it returns: they are the manager's, wiped when they retire.
	Save(ctx context.Context, r Ring) error
}

// EpochStore holds the ticket keys of a fleet of daemons, one per epoch
// (see Options.Fleet). Every method must return by ctx's deadline; the
// manager stops waiting then anyway, but a call that outlives it keeps
// one of a few call slots busy until it does return.
//
// Epoch numbers are relative to the period T/2: a store shared by
// daemons with different smtpd_tls_session_cache_timeout values must
// keep their epochs apart (the period in the key names, say). The
// manager refuses a key whose expiry does not fit its epoch.
type EpochStore interface {
	// Epochs returns the keys stored for the given epochs; epochs with
	// no key are absent from the map.
	Epochs(ctx context.Context, epochs []int64) (map[int64]proto.TicketKey, error)
	// Create stores k as the key of epoch unless that epoch already has
	// one, and returns the key that is stored: k, or the one another
	// member stored first. The entry must stay readable until at least
	// until (when k stops decrypting) and may then expire by itself.
	Create(ctx context.Context, epoch int64, k proto.TicketKey, until time.Time) (proto.TicketKey, error)
	// ByName returns a stored key by its name (a ticket issued by another
	// member), or ErrUnknownKey if there is none.
	ByName(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error)
}

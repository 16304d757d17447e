package tktkey

import "context"

// Store persists the key ring so that keys can survive restarts or be
// shared by several daemons. It is optional: a nil Store keeps keys in
// memory only (the Postfix behaviour).
type Store interface {
	// Load returns the saved ring, or an empty ring and no error when
	// nothing is saved.
	Load(ctx context.Context) (Ring, error)
	// Save replaces the saved ring.
	Save(ctx context.Context, r Ring) error
}

// Package tktkey manages RFC 5077 session ticket keys the way Postfix's
// tlsmgr does: a current key that encrypts for T/2 and the previous key
// that still decrypts for another T/2.
package tktkey

import "github.com/gotlsmgr/tlsmgr/proto"

// Ring is the pair of keys the daemon keeps. Current is nil until the
// first ticket is issued; Previous is nil until the first rotation.
type Ring struct {
	Current  *proto.TicketKey
	Previous *proto.TicketKey
}

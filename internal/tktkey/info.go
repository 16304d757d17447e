package tktkey

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// KeyInfo describes a key of the ring, without its secrets (the name is
// in every ticket issued with it anyway).
type KeyInfo struct {
	Epoch  int64 // fleet mode; 0 otherwise
	Name   [proto.TicketNameLen]byte
	Expiry int64
	Local  bool // made here, not shared: every key outside fleet mode
	Spare  bool // a fleet key that only decrypts: found by name, or replaced in the store
}

// Keys lists the ring by epoch (by expiry outside fleet mode), the
// fleet's key of an epoch first.
func (m *Manager) Keys() []KeyInfo { return m.ring.keys() }

func (r *localRing) keys() []KeyInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []KeyInfo
	for _, k := range []*proto.TicketKey{r.held.Previous, r.held.Current} {
		if k != nil {
			out = append(out, KeyInfo{Name: k.Name, Expiry: k.Expiry, Local: true})
		}
	}
	return out
}

func (r *fleetRing) keys() []KeyInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []KeyInfo
	r.prune(r.now())
	for _, en := range r.entries {
		out = append(out, KeyInfo{
			Epoch: en.epoch, Name: en.key.Name, Expiry: en.key.Expiry,
			Local: en.kind == kindLocal, Spare: en.kind == kindSpare,
		})
	}
	rank := func(k KeyInfo) int {
		switch {
		case k.Local:
			return 1
		case k.Spare:
			return 2
		}
		return 0
	}
	slices.SortFunc(out, func(a, b KeyInfo) int {
		switch {
		case a.Epoch != b.Epoch:
			return cmp.Compare(a.Epoch, b.Epoch)
		case rank(a) != rank(b):
			return rank(a) - rank(b)
		case a.Expiry != b.Expiry:
			return cmp.Compare(a.Expiry, b.Expiry)
		}
		return slices.Compare(a.Name[:], b.Name[:])
	})
	return out
}

// Digest is a short hash of the fleet keys held (epoch, name and expiry,
// never the secrets): members that agree on the ring show the same
// digest. Local and spare keys do not count. Empty when no fleet key is
// held (and always outside fleet mode). Right after a refresh point the
// members that have loaded the next key differ for a few seconds from
// those that have not.
func (m *Manager) Digest() string { return m.ring.digest() }

func (r *localRing) digest() string { return "" }

func (r *fleetRing) digest() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fleet []*entry
	r.prune(r.now())
	for _, en := range r.entries {
		if en.kind == kindFleet {
			fleet = append(fleet, en)
		}
	}
	if len(fleet) == 0 {
		return ""
	}
	slices.SortFunc(fleet, func(a, b *entry) int { return cmp.Compare(a.epoch, b.epoch) })
	h := sha256.New()
	var b [8 + proto.TicketNameLen + 8]byte
	for _, en := range fleet {
		binary.BigEndian.PutUint64(b[0:], uint64(en.epoch))
		copy(b[8:], en.key.Name[:])
		binary.BigEndian.PutUint64(b[8+proto.TicketNameLen:], uint64(en.key.Expiry))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Stats are the manager's figures for tlsmgrctl stats.
type Stats struct {
	Mode string // "memory", "store" or "fleet"

	// Fleet mode only.
	FleetUp         bool      // the last refresh of the ring succeeded
	LastRefresh     time.Time // of the last successful one; zero if none
	Refreshes       uint64
	RefreshFailures uint64
	StoreCalls      uint64 // every call made to the EpochStore
	StoreErrors     uint64 // calls that failed (a name not found is no error)
	StoreTimeouts   uint64 // of those, calls that ran into their deadline
	NameLookups     uint64 // by-name lookups of names not in the ring
	NameHits        uint64 // of those, keys found that still decrypt
	NegativeHits    uint64 // unknown names answered from the miss table
	LookupsShed     uint64 // unknown names answered as misses without asking: rate limit or calls outstanding
	LocalKeys       uint64 // local keys made for want of a fleet key
	Displaced       uint64 // fleet keys found replaced in the store by another
	Digest          string

	Keys int // keys held, of any kind
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	var s Stats
	m.ring.stats(&s)
	return s
}

func (r *localRing) stats(s *Stats) {
	s.Mode = "memory"
	if r.store != nil {
		s.Mode = "store"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range []*proto.TicketKey{r.held.Current, r.held.Previous} {
		if k != nil {
			s.Keys++
		}
	}
}

func (r *fleetRing) stats(s *Stats) {
	s.Mode = "fleet"
	r.mu.Lock()
	r.prune(r.now())
	s.Keys = len(r.entries)
	s.FleetUp = !r.down && !r.lastRefresh.IsZero()
	s.LastRefresh = r.lastRefresh
	r.mu.Unlock()
	c := &r.counters
	s.Refreshes, s.RefreshFailures = c.refreshes.Load(), c.refreshFailures.Load()
	s.StoreCalls, s.StoreErrors, s.StoreTimeouts = c.storeCalls.Load(), c.storeErrors.Load(), c.storeTimeouts.Load()
	s.NameLookups, s.NameHits = c.nameLookups.Load(), c.nameHits.Load()
	s.NegativeHits, s.LookupsShed = c.negativeHits.Load(), c.lookupsShed.Load()
	s.LocalKeys, s.Displaced = c.localKeys.Load(), c.displaced.Load()
	s.Digest = r.digest()
}

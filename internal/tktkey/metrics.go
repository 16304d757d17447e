package tktkey

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// keyCounts are what the manager's callers got: keys issued for
// encryption, names found and unknown, and the changes of the issuing key.
type keyCounts struct {
	found, unknown, issues, rotations atomic.Uint64

	mu         sync.Mutex
	lastName   [proto.TicketNameLen]byte
	lastExpiry int64
	any        bool
}

func (c *keyCounts) issued(k proto.TicketKey) {
	c.issues.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.any && c.lastName != k.Name {
		c.rotations.Add(1)
	}
	c.lastName, c.lastExpiry, c.any = k.Name, k.Expiry, true
}

var (
	descMode      = metrics.Desc{Name: "tktkey_mode", Help: "Where ticket keys come from: memory, store (a key file) or fleet.", Stat: proto.KeyModeStat}
	descKeys      = metrics.Desc{Name: "tktkey_keys", Help: "Ticket keys held, of any kind."}
	descIssued    = metrics.Desc{Name: "tktkey_issued", Help: "Keys handed out for issuing tickets."}
	descRotations = metrics.Desc{Name: "tktkey_rotations", Help: "Changes of the key handed out for issuing tickets."}
	descFound     = metrics.Desc{Name: "tktkey_lookups_found", Help: "Keys asked for by name and found."}
	descUnknown   = metrics.Desc{Name: "tktkey_lookups_unknown", Help: "Keys asked for by name and unknown or expired."}
	descAge       = metrics.Desc{Name: "tktkey_current_key_age_seconds", Help: "Age of the key last handed out for issuing tickets."}
	descRingKey   = metrics.Desc{Name: "tktkey_ring_key", Help: "One key of the ring (stats only; never a secret).", Stat: proto.RingKeyStat}
	descDigest    = metrics.Desc{Name: "tktkey_ring_digest", Help: "Digest of the fleet keys held (stats only).", Stat: proto.RingDigestStat}
	descFleetUp   = metrics.Desc{Name: "tktkey_fleet_up", Help: "1 if the last refresh of the fleet's ring succeeded."}
	descRefresh   = metrics.Desc{Name: "tktkey_last_refresh_timestamp_seconds", Help: "Time of the last successful refresh of the fleet's ring.", Stat: "-"}
)

// Collect emits the ring's figures. Each key of the ring is a stats line
// (tlsmgrctl keys reads them), never a Prometheus series: names change
// every epoch.
func (m *Manager) Collect(_ context.Context, emit metrics.Emit) {
	st := m.Stats()
	emit.Info(descMode, st.Mode)
	emit.Gauge(descKeys, float64(st.Keys))
	emit.Counter(descIssued, m.counts.issues.Load())
	emit.Counter(descRotations, m.counts.rotations.Load())
	emit.Counter(descFound, m.counts.found.Load())
	emit.Counter(descUnknown, m.counts.unknown.Load())
	m.counts.mu.Lock()
	any, expiry := m.counts.any, m.counts.lastExpiry
	m.counts.mu.Unlock()
	if any {
		// A key encrypts for half the timeout and ends at Expiry.
		born := expiry + 1 - m.half
		emit.Gauge(descAge, float64(m.now().Unix()-born))
	}
	for _, k := range m.Keys() {
		source := "fleet"
		switch {
		case k.Local:
			source = "local"
		case k.Spare:
			source = "spare"
		}
		d := descRingKey
		d.StatOnly = true
		emit.Info(d, fmt.Sprintf("epoch=%d name=%x expiry=%s source=%s",
			k.Epoch, k.Name, time.Unix(k.Expiry, 0).UTC().Format(time.RFC3339), source))
	}
	if st.Mode != "fleet" {
		return
	}
	d := descDigest
	d.StatOnly = true
	emit.Info(d, st.Digest)
	emit.Bool(descFleetUp, st.FleetUp)
	last := "never"
	if !st.LastRefresh.IsZero() {
		last = st.LastRefresh.UTC().Format(time.RFC3339)
		emit.Gauge(descRefresh, float64(st.LastRefresh.Unix()))
	}
	emit.Info(metrics.Desc{Name: "tktkey_last_refresh", Help: "Time of the last successful refresh (stats only).", StatOnly: true}, last)
	for _, c := range []struct {
		name, help string
		v          uint64
	}{
		{"refreshes", "Refreshes of the fleet's ring.", st.Refreshes},
		{"refresh_failures", "Refreshes of the fleet's ring that failed.", st.RefreshFailures},
		{"store_calls", "Calls made to the fleet's key store.", st.StoreCalls},
		{"store_errors", "Calls to the fleet's key store that failed.", st.StoreErrors},
		{"store_timeouts", "Calls to the fleet's key store that ran into their deadline.", st.StoreTimeouts},
		{"name_lookups", "Lookups in the store of names not in the ring.", st.NameLookups},
		{"name_hits", "Of those, keys found that still decrypt.", st.NameHits},
		{"negative_hits", "Unknown names answered from the miss table.", st.NegativeHits},
		{"lookups_shed", "Unknown names answered as misses without asking the store.", st.LookupsShed},
		{"local_keys", "Local keys made for want of a fleet key.", st.LocalKeys},
		{"displaced", "Fleet keys found replaced in the store by another.", st.Displaced},
	} {
		emit.Counter(metrics.Desc{Name: "tktkey_" + c.name, Help: c.help}, c.v)
	}
}

package daemon

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gotlsmgr/tlsmgr/config"
	"github.com/gotlsmgr/tlsmgr/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/proto"
	"github.com/gotlsmgr/tlsmgr/scache"
	"github.com/gotlsmgr/tlsmgr/scache/redisstore"
	"github.com/gotlsmgr/tlsmgr/tktkey"
	"github.com/gotlsmgr/tlsmgr/tktkey/redisring"
)

// backend is one user of a Redis (a cache, or the ticket-key ring): each
// has its own client, so that its breaker and counters are its own and
// stats can tell the operator which part of the daemon is cut off.
type backend struct {
	name     string // "smtpd", "smtp", "lmtp" or "tktkey": the stats prefix
	settings *settings.Settings
	client   *redisconn.Client
	sealer   *seal.Sealer
	cache    *redisstore.Store // the cache store on it, if any
}

// openBackend reads the settings file of a redis: database and builds its
// client. It runs before the jail: the settings, password and seal key
// files are root's or the mail owner's, and out of reach in the chroot.
func (d *daemon) openBackend(name, path string) (*backend, error) {
	s, err := settings.Load(path, d.uid)
	if err != nil {
		return nil, err
	}
	sealer, err := seal.New(s.SealKeys)
	if err != nil {
		return nil, fmt.Errorf("%s: seal_key_file: %w", path, err)
	}
	client, err := redisconn.New(s, d.log, name)
	if err != nil {
		sealer.Close()
		return nil, err
	}
	b := &backend{name: name, settings: s, client: client, sealer: sealer}
	d.backends = append(d.backends, b)
	return b, nil
}

// storeTimeout is the longest of the remote stores' timeouts: the
// server's deadline for store calls, 0 when every store is local.
func (d *daemon) storeTimeout() time.Duration {
	var t time.Duration
	for _, b := range d.backends {
		t = max(t, b.settings.Timeout)
	}
	return t
}

// openRedisStore opens a cache shared through Redis: redis:/path/to/settings.cf.
func openRedisStore(d *daemon, cp config.CacheParams, lim scache.Limits) (scache.Store, error) {
	if !strings.HasPrefix(cp.DBPath, "/") {
		return nil, fmt.Errorf("want redis:/absolute/path/to/settings.cf")
	}
	b, err := d.openBackend(cp.Name, cp.DBPath)
	if err != nil {
		return nil, err
	}
	b.cache, err = redisstore.New(b.client, b.sealer, b.settings.KeyPrefix, cp.Name, lim, d.log)
	return b.cache, err
}

// fleetKeys makes the ticket-key ring the fleet's, from the settings file
// named by tlsmgr_ticket_key_database.
func (d *daemon) fleetKeys(opts *tktkey.Options) error {
	_, path, _ := strings.Cut(d.params.TicketKeyDatabase, ":")
	b, err := d.openBackend("tktkey", path)
	if err != nil {
		return fmt.Errorf("tlsmgr_ticket_key_database: %w", err)
	}
	opts.Fleet = redisring.New(b.client, b.sealer, b.settings.KeyPrefix, int64(opts.Timeout/time.Second)/2)
	// A refresh makes a few calls; it runs in the background, so it may
	// wait for several of Redis's timeouts, never for a request's.
	opts.StoreTimeout = max(20*b.settings.Timeout, 200*time.Millisecond)
	opts.LookupTimeout = b.settings.Timeout
	return nil
}

// closeBackends closes the Redis clients, after the caches and keys that
// use them.
func (d *daemon) closeBackends() {
	for _, b := range d.backends {
		b.client.Close()
		b.sealer.Close()
	}
	d.backends = nil
}

// backendStats adds each backend's state and counters to stats replies:
// a cache's under its cache prefix, the key ring's under redis_tktkey_.
func (d *daemon) backendStats(add func(name, value string)) {
	for _, b := range d.backends {
		if b.cache != nil {
			p := b.name + "_cache_"
			b.cache.FleetStats().AddStats(func(name, value string) { add(p+name, value) })
			continue
		}
		st := b.client.Stats()
		p := "redis_" + b.name + "_"
		add(p+"state", st.State)
		add(p+"ops", strconv.FormatUint(st.Ops, 10))
		add(p+"errors", strconv.FormatUint(st.Errors, 10))
		add(p+"timeouts", strconv.FormatUint(st.Timeouts, 10))
		add(p+"refused", strconv.FormatUint(st.Refused, 10))
		add(p+"breaker_opens", strconv.FormatUint(st.BreakerOpens, 10))
	}
}

// keyStats adds the ticket-key ring's figures to stats replies. The
// digest covers the epochs, names and expiries of the fleet keys held,
// never their secrets: members that agree on the ring show the same one.
func (d *daemon) keyStats(add func(name, value string)) {
	st := d.keys.Stats()
	add(proto.KeyModeStat, st.Mode)
	add("tktkey_keys", strconv.Itoa(st.Keys))
	// One line per key for tlsmgrctl keys: never the secret parts (the
	// name is in every ticket issued with the key anyway).
	for _, k := range d.keys.Keys() {
		source := "fleet"
		switch {
		case k.Local:
			source = "local"
		case k.Spare:
			source = "spare"
		}
		add(proto.RingKeyStat, fmt.Sprintf("epoch=%d name=%x expiry=%s source=%s",
			k.Epoch, k.Name, time.Unix(k.Expiry, 0).UTC().Format(time.RFC3339), source))
	}
	if st.Mode != "fleet" {
		return
	}
	add(proto.RingDigestStat, st.Digest)
	add("tktkey_fleet_up", boolString(st.FleetUp))
	add("tktkey_last_refresh", timeString(st.LastRefresh))
	for _, c := range []struct {
		name string
		v    uint64
	}{
		{"refreshes", st.Refreshes}, {"refresh_failures", st.RefreshFailures},
		{"store_calls", st.StoreCalls}, {"store_errors", st.StoreErrors}, {"store_timeouts", st.StoreTimeouts},
		{"name_lookups", st.NameLookups}, {"name_hits", st.NameHits}, {"negative_hits", st.NegativeHits},
		{"lookups_shed", st.LookupsShed}, {"local_keys", st.LocalKeys}, {"displaced", st.Displaced},
	} {
		add("tktkey_"+c.name, strconv.FormatUint(c.v, 10))
	}
}

package daemon

import (
	"fmt"
	"strings"
	"time"

	"github.com/gotlsmgr/tlsmgr/config"
	"github.com/gotlsmgr/tlsmgr/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/fleet/settings"
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

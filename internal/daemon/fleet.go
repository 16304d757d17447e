package daemon

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/redisstore"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey/redisring"
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
	// files are the settings file and the files it names, as they were
	// when read: a reload says when one has changed since.
	files map[string]fileStamp
}

// fileStamp tells a file's versions apart: another inode, size, or
// modification or change time.
type fileStamp struct {
	dev, ino, size uint64
	mtime, ctime   int64
}

// stampOf is path's stamp; false if the daemon may not look (a
// directory of root's, now that it is the mail owner).
func stampOf(path string) (fileStamp, bool) {
	var st unix.Stat_t
	switch err := unix.Stat(path, &st); err {
	case nil:
	case unix.EACCES, unix.EPERM:
		return fileStamp{}, false
	default:
		return fileStamp{}, true // gone, or unreadable: changed
	}
	return fileStamp{dev: st.Dev, ino: st.Ino, size: uint64(st.Size),
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}

// changedFiles lists the files of the backend that changed since they
// were read. Their contents are not read again: the password and seal
// key files are root's, and the daemon no longer is.
func (b *backend) changedFiles() []string {
	var changed []string
	for _, path := range append([]string{b.settings.Path}, b.settings.Files...) {
		if st, ok := stampOf(path); ok && st != b.files[path] {
			changed = append(changed, path)
		}
	}
	return changed
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
	b := &backend{name: name, settings: s, client: client, sealer: sealer, files: map[string]fileStamp{}}
	for _, f := range append([]string{path}, s.Files...) {
		b.files[f], _ = stampOf(f)
	}
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

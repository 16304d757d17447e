package scache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

// Config describes one cache.
type Config struct {
	Name     string        // "smtpd", "smtp" or "lmtp"
	Database string        // as configured, e.g. "btree:/var/lib/postfix/smtpd_scache"; for logs
	Timeout  time.Duration // > 0; entries older than this are gone
	LogCache bool          // log every transaction, as *_tls_loglevel >= 2 does
	// SweepBatch is how many expired entries one store call may remove;
	// small batches keep the store free for requests.
	SweepBatch int
	// Mix, if set, receives each swept entry's bytes for the PRNG pool.
	Mix func([]byte)
	Log *slog.Logger     // nil: no log, and no transaction logging
	Now func() time.Time // for tests; time.Now if nil
	// Watch, if set, is told when each sweep batch starts and (through
	// the function it returns) ends: the daemon's watchdog
	// (daemon_timeout), since a store wedged on a dead disk wedges the
	// sweep in the background, where no request would notice.
	Watch func(what string) (done func())
}

// Cache is one enabled session cache: expiry on top of a Store.
type Cache struct {
	cfg   Config // Timeout and LogCache as at New: see timeout, logCache
	store Store
	now   func() time.Time

	// The timeout (in nanoseconds) and whether to log transactions, read
	// by every request and changed by a reload (SetTimeout, SetLogCache).
	timeout  atomic.Int64
	logCache atomic.Bool
	retimed  chan struct{} // wakes RunSweeper after SetTimeout

	hits, misses, expired, updates, refused, deletes, swept, storeErrors atomic.Uint64
}

// New returns a cache over store. The cache owns the store from now on.
func New(cfg Config, store Store) *Cache {
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 100
	}
	if cfg.Log == nil {
		cfg.LogCache = false // nowhere to log to
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.LogCache && cfg.Log != nil {
		maillog.Infof(cfg.Log, "open %s TLS cache %s", cfg.Name, cfg.Database)
	}
	c := &Cache{cfg: cfg, store: store, now: now, retimed: make(chan struct{}, 1)}
	c.timeout.Store(int64(cfg.Timeout))
	c.logCache.Store(cfg.LogCache)
	return c
}

// Name is the cache type, e.g. "smtpd".
func (c *Cache) Name() string { return c.cfg.Name }

// Timeout is the configured entry lifetime.
func (c *Cache) Timeout() time.Duration { return time.Duration(c.timeout.Load()) }

// SetTimeout changes the entry lifetime from now on (a reload of
// main.cf): entries are kept, and live while written + d >= now, so a
// shorter timeout expires the older ones at once. The sweeper then runs
// at once and every d from then on. d must be positive; a store whose
// entries expire by themselves (Redis) keeps the lifetime it gave the
// entries already written.
func (c *Cache) SetTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	if time.Duration(c.timeout.Swap(int64(d))) == d {
		return
	}
	select {
	case c.retimed <- struct{}{}:
	default: // already told
	}
}

// SetLogCache turns the logging of every transaction on or off (a reload
// of *_tls_loglevel). Without a Log it stays off.
func (c *Cache) SetLogCache(on bool) { c.logCache.Store(on && c.cfg.Log != nil) }

// SetLimits bounds the cache's store by lim from now on, keeping its
// entries: a smaller bound evicts the oldest-written at once, down to it,
// and counts them as evictions.
func (c *Cache) SetLimits(ctx context.Context, lim Limits) error {
	if lim.MaxEntries <= 0 || lim.MaxBytes <= 0 {
		return fmt.Errorf("%s TLS cache %s: invalid bounds %+v", c.cfg.Name, c.cfg.Database, lim)
	}
	if err := c.store.SetLimits(ctx, lim); err != nil {
		return c.storeError("set bounds", err)
	}
	return nil
}

// isExpired follows Postfix: an entry lives while written + timeout >= now.
func (c *Cache) isExpired(written, now time.Time) bool {
	return written.Add(c.Timeout()).Before(now)
}

// Lookup returns the session stored under id, or ErrNotFound when there is
// none or it expired (an expired entry is deleted on the way).
func (c *Cache) Lookup(ctx context.Context, id string) ([]byte, error) {
	logging := c.logCache.Load()
	if logging {
		maillog.Infof(c.cfg.Log, "lookup %s session id=%s%s", c.cfg.Name, id, clientSuffix(ctx))
	}
	e, err := c.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		c.misses.Add(1)
		return nil, ErrNotFound
	}
	if err != nil {
		c.storeErrors.Add(1)
		return nil, c.storeError("lookup", err)
	}
	if c.isExpired(e.Written, c.now()) {
		c.expired.Add(1)
		c.misses.Add(1)
		if _, err := c.store.Delete(ctx, id); err != nil {
			c.storeErrors.Add(1)
		}
		clear(e.Session) // a secret no one will read
		return nil, ErrNotFound
	}
	if logging {
		maillog.Infof(c.cfg.Log, "read %s TLS cache entry %s: time=%d [data %d bytes]%s",
			c.cfg.Name, id, e.Written.Unix(), len(e.Session), clientSuffix(ctx))
	}
	c.hits.Add(1)
	return e.Session, nil
}

// Update stores session under id with the current time. It returns
// ErrTooLarge when the entry alone is over the cache's byte bound.
func (c *Cache) Update(ctx context.Context, id string, session []byte) error {
	now := c.now()
	if c.logCache.Load() {
		from := clientSuffix(ctx)
		maillog.Infof(c.cfg.Log, "put %s session id=%s [data %d bytes]%s", c.cfg.Name, id, len(session), from)
		maillog.Infof(c.cfg.Log, "write %s TLS cache entry %s: time=%d [data %d bytes]%s",
			c.cfg.Name, id, now.Unix(), len(session), from)
	}
	err := c.store.Put(ctx, id, Entry{Written: now, Expires: now.Add(c.Timeout()), Session: session})
	switch {
	case err == nil:
		c.updates.Add(1)
		return nil
	case errors.Is(err, ErrTooLarge):
		c.refused.Add(1)
		return err
	default:
		c.storeErrors.Add(1)
		return c.storeError("update", err)
	}
}

// Delete removes the entry under id and reports whether there was one.
func (c *Cache) Delete(ctx context.Context, id string) (bool, error) {
	if c.logCache.Load() {
		maillog.Infof(c.cfg.Log, "delete %s session id=%s%s", c.cfg.Name, id, clientSuffix(ctx))
	}
	found, err := c.store.Delete(ctx, id)
	if err != nil {
		c.storeErrors.Add(1)
		return false, c.storeError("delete", err)
	}
	if found {
		c.deletes.Add(1)
	}
	return found, nil
}

// clientKey is the context key of WithClient.
type clientKey struct{}

// WithClient returns ctx telling the cache which client a Lookup, Update
// or Delete is made for (e.g. "conn 7 (pid 4242, uid 107) on
// private/tlsmgr"): transaction logging names it on each line. Callers
// need it only when Logging reports true.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// Logging reports whether the cache logs every transaction (LogCache,
// or as SetLogCache last said).
func (c *Cache) Logging() bool { return c.logCache.Load() }

// clientSuffix is " from CLIENT" for a context made by WithClient.
func clientSuffix(ctx context.Context) string {
	if s, ok := ctx.Value(clientKey{}).(string); ok && s != "" {
		return " from " + s
	}
	return ""
}

func (c *Cache) storeError(op string, err error) error {
	return fmt.Errorf("%s TLS cache %s: %s: %w", c.cfg.Name, c.cfg.Database, op, err)
}

// sweepDuty is the share of a store's time the sweep may take: after each
// batch it pauses for (1/sweepDuty - 1) times what the batch took. A file
// store's sweep transaction competes with requests for the CPU, so the
// sweep stays in the background even when a million entries expire at
// once (they then take about 40 minutes to go). A slow sweep costs
// nothing else: expired entries are never returned, and they are the
// oldest, so the bounds evict them first.
const sweepDuty = 0.01

// Sweep removes every entry that has expired by now, a batch at a time,
// pausing between batches so that requests are never held up for long.
func (c *Cache) Sweep(ctx context.Context) (int, error) {
	if c.logCache.Load() {
		maillog.Infof(c.cfg.Log, "start TLS %s session cache cleanup", c.cfg.Name)
	}
	cutoff := c.now().Add(-c.Timeout())
	total := 0
	for {
		began := time.Now()
		done := func() {}
		if c.cfg.Watch != nil {
			done = c.cfg.Watch("sweep of the " + c.cfg.Name + " TLS cache " + c.cfg.Database)
		}
		n, more, err := c.store.Expire(ctx, cutoff, c.cfg.SweepBatch, c.cfg.Mix)
		done()
		took := time.Since(began)
		total += n
		c.swept.Add(uint64(n))
		if err != nil {
			c.storeErrors.Add(1)
			return total, c.storeError("sweep", err)
		}
		if !more {
			return total, nil
		}
		pause := max(time.Millisecond, time.Duration(float64(took)*(1/sweepDuty-1)))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return total, ctx.Err()
		case <-t.C:
		}
	}
}

// RunSweeper sweeps once at start, since a cache kept across a restart may
// hold entries that expired meanwhile, then every timeout (as Postfix
// does) until ctx is done. After SetTimeout it sweeps at once, then every
// new timeout.
func (c *Cache) RunSweeper(ctx context.Context) {
	t := time.NewTicker(c.Timeout())
	defer t.Stop()
	for {
		if _, err := c.Sweep(ctx); err != nil && ctx.Err() == nil && c.cfg.Log != nil {
			maillog.Warnf(c.cfg.Log, "%v; the rest waits for the next sweep", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.retimed:
			t.Reset(c.Timeout())
		}
	}
}

// Stats is a snapshot of a cache's counters and its store's contents.
// Refused counts entries too large for the cache. StoreErrors counts store
// calls that failed, among them the updates and deletes a store refused
// because its commits fail (also in Store.Refused). Updates and Deletes
// count what was acknowledged; Store.Lost says how much of it a store that
// commits in the background could not write after all.
type Stats struct {
	Name                                                    string
	Timeout                                                 time.Duration
	Hits, Misses, Expired, Updates, Refused, Deletes, Swept uint64
	StoreErrors                                             uint64
	Store                                                   StoreStats
}

// Stats reports the counters; the store's part may fail (remote stores).
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	s := Stats{
		Name: c.cfg.Name, Timeout: c.Timeout(),
		Hits: c.hits.Load(), Misses: c.misses.Load(), Expired: c.expired.Load(),
		Updates: c.updates.Load(), Refused: c.refused.Load(), Deletes: c.deletes.Load(),
		Swept: c.swept.Load(), StoreErrors: c.storeErrors.Load(),
	}
	var err error
	s.Store, err = c.store.Stats(ctx)
	return s, err
}

// Close closes the store.
func (c *Cache) Close() error {
	if c.logCache.Load() {
		maillog.Infof(c.cfg.Log, "close %s TLS cache %s", c.cfg.Name, c.cfg.Database)
	}
	return c.store.Close()
}

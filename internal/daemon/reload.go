package daemon

// Live reload, standalone only: SIGHUP re-reads main.cf as start-up did
// (the same MAIL_CONFIG directory or built-in defaults, the same -o
// overrides on top) and applies in place, keeping every cache entry,
// what can change while running. Everything else is logged as needing a
// restart, one warning per parameter, and left as it is. Which is which
// is config's parameter table (Param.Reload), and every parameter of it
// is compared (config.Changes).
//
// Under master(8) SIGHUP keeps its default action, which ends the
// process, as it ends Postfix's own tlsmgr: Postfix never sends it one.
// "postfix reload" reaches the daemon through master(8), which closes the
// status channel; the daemon then saves its state and exits, and master(8)
// starts a fresh one on demand, which reads main.cf anew.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/server"
)

// readConfig reads the configuration from where start-up found it
// (d.cfgDir, d.cfgExtra) with the command line's -o overrides, and
// validates it.
func (d *daemon) readConfig() (*config.Config, *config.Params, error) {
	cfg, err := config.Load(d.cfgDir, d.cfgExtra, d.opts.Overrides)
	if err != nil {
		return nil, nil, err
	}
	service := d.opts.ServiceName
	if service == "" {
		service = ProcessName
	}
	cfg.Set("process_name", ProcessName)
	cfg.Set("process_id", strconv.Itoa(d.pid))
	cfg.Set("service_name", service)
	p, err := cfg.Params()
	if err != nil {
		// What was read still says where to log the error.
		return cfg, nil, err
	}
	return cfg, p, nil
}

// reloadSignals is where SIGHUP arrives in standalone mode; nil (never)
// under master(8) and with -S, where SIGHUP keeps its default action.
func (d *daemon) reloadSignals() chan os.Signal {
	if d.opts.Listen == "" {
		return nil
	}
	c := make(chan os.Signal, 1) // SIGHUPs during a reload make one more
	signal.Notify(c, syscall.SIGHUP)
	return c
}

// stopSignals ends reloads when the daemon stops: a SIGHUP from then on
// is ignored, rather than end the process before it has saved its state.
func stopSignals(c chan os.Signal) {
	if c != nil {
		signal.Ignore(syscall.SIGHUP)
	}
}

// awaitStop returns why the daemon must stop, reloading main.cf at every
// SIGHUP until then. Reloads run here, one at a time, never during the
// shutdown.
func (d *daemon) awaitStop(stop <-chan string, hup <-chan os.Signal) string {
	for {
		select {
		case why := <-stop:
			return why
		case <-hup:
			d.reload()
		}
	}
}

// reloading is one reload in progress.
type reloading struct {
	d        *daemon
	old, new *config.Params // what runs, and what main.cf now says
	now      *config.Params // what runs once the reload is done
	changes  []string       // what was applied, for the summary line
	// bounded says that the cache's new bounds are applied: once for
	// both parameters.
	bounded [len(config.CacheTypes)]bool
}

// liveParams apply, each in place, the parameters that the table in
// config marks ReloadLive; one missing here would be warned about as
// needing a restart (TestLiveParamsApplied checks that none is, and
// that nothing else is here). Every other parameter that changed needs
// a restart (ReloadRestart) or does not matter to a running daemon
// (ReloadNone).
var liveParams = func() map[string]func(*reloading, config.Change) {
	m := map[string]func(*reloading, config.Change){
		"tlsmgr_client_limit":    (*reloading).clientLimit,
		"tlsmgr_metrics_address": (*reloading).metricsAddress,
	}
	for _, name := range config.DatabaseTypeParams {
		m[name] = (*reloading).databaseType
	}
	for i, name := range config.CacheTypes {
		m[name+"_tls_session_cache_timeout"] = func(r *reloading, c config.Change) { r.cacheTimeout(i, c) }
		m[name+"_tls_session_cache_max_entries"] = func(r *reloading, _ config.Change) { r.cacheBounds(i) }
		m[name+"_tls_session_cache_max_bytes"] = func(r *reloading, _ config.Change) { r.cacheBounds(i) }
		m[name+"_tls_loglevel"] = func(r *reloading, c config.Change) { r.cacheLogLevel(i, c) }
	}
	return m
}()

// reload re-reads main.cf and applies what may change in place. A
// configuration with an error changes nothing.
func (d *daemon) reload() {
	done := d.wd.Start("reload of main.cf")
	defer done()
	where := "the configuration (no main.cf: built-in defaults and -o)"
	if d.cfgDir != "" {
		where = filepath.Join(d.cfgDir, "main.cf")
	}
	conf, p, err := d.readConfig()
	if err == nil {
		err = server.CheckLimits(p.ClientLimit)
	}
	if err != nil {
		maillog.Errorf(d.log, "reload of %s failed: %v; nothing changed", where, err)
		return
	}
	for _, w := range p.Warnings {
		maillog.WarnAlwaysf(d.log, "%s", w)
	}
	// now is a copy of its own, which the daemon keeps after the reload
	// (not the reload, which would keep the one before alive, and so on).
	now := *d.params
	now.Warnings = p.Warnings
	r := &reloading{d: d, old: d.params, new: p, now: &now}
	// Values are compared as the daemon uses them, so that "3600" and
	// "1h" are no change.
	for _, c := range config.Changes(r.old, p) {
		switch c.Reload {
		case config.ReloadRestart:
			r.restart(c.Name, c.From, c.To, "")
		case config.ReloadLive:
			if apply := liveParams[c.Name]; apply != nil {
				apply(r, c)
			} else {
				r.restart(c.Name, c.From, c.To, "")
			}
		}
	}
	for _, b := range d.backends {
		if files := b.changedFiles(); len(files) > 0 {
			maillog.WarnAlwaysf(d.log, "the Redis settings of %s (%s) changed since start-up: %s; that needs a restart; keeping those of the start",
				b.name, b.settings.Path, strings.Join(files, ", "))
		}
	}
	d.params, d.conf = r.now, conf
	if len(r.changes) == 0 {
		maillog.Infof(d.log, "reloaded %s: nothing changed that applies while running", where)
		return
	}
	maillog.Infof(d.log, "reloaded %s: %s", where, strings.Join(r.changes, ", "))
}

// changed records a change applied, for the summary line.
func (r *reloading) changed(name, from, to, note string) {
	c := fmt.Sprintf("%s %s -> %s", name, from, to)
	if note != "" {
		c += " (" + note + ")"
	}
	r.changes = append(r.changes, c)
}

// restart warns that a change needs a restart; what runs keeps the old
// value, so that every reload that still finds it says so again.
func (r *reloading) restart(name, from, to, note string) {
	if note != "" {
		note = "; " + note
	}
	maillog.WarnAlwaysf(r.d.log, "%s changed from %q to %q: that needs a restart; keeping %q%s", name, from, to, from, note)
}

func quoted(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func (r *reloading) clientLimit(c config.Change) {
	closed := r.d.srv.SetMaxClients(r.new.ClientLimit)
	note := ""
	if closed > 0 {
		note = fmt.Sprintf("%d idle connections closed", closed)
	}
	r.changed(c.Name, c.From, c.To, note)
	r.now.ClientLimit = r.new.ClientLimit
}

func (r *reloading) metricsAddress(c config.Change) {
	if r.d.reloadMetrics(r.old.MetricsAddress, r.new.MetricsAddress) {
		r.changed(c.Name, quoted(c.From), quoted(c.To), "")
		r.now.MetricsAddress = r.new.MetricsAddress
	}
}

// cacheTimeout applies cache i's new timeout, to what policy reports and
// to the cache's entries (server.SetCacheTimeout); turning the cache on
// or off (0) needs a restart.
func (r *reloading) cacheTimeout(i int, c config.Change) {
	oc, nc := &r.old.Caches[i], &r.new.Caches[i]
	if oc.Enabled != (oc.Database != "" && nc.Timeout > 0) {
		// 0 turns the cache off, and a positive value on.
		how := "it turns the cache on"
		if oc.Enabled {
			how = "0 turns the cache off"
		}
		r.restart(c.Name, c.From, c.To, how)
		return
	}
	if !r.d.srv.SetCacheTimeout(oc.Name, nc.Timeout) {
		maillog.WarnAlwaysf(r.d.log, "%s changed from %q to %q: the server refused it; keeping %q", c.Name, c.From, c.To, c.From)
		return
	}
	r.now.Caches[i].Timeout = nc.Timeout
	r.changed(c.Name, c.From, c.To, "")
	if i == 0 {
		// Postfix derives the ticket key lifetime from it too, and the
		// ring (a fleet's included) is made for one.
		maillog.WarnAlwaysf(r.d.log, "%s changed from %q to %q: applied to the %s cache; session tickets keep the key lifetime of %q (0: no tickets) until a restart",
			c.Name, c.From, c.To, oc.Name, c.From)
	}
}

// databaseType applies a change to a parameter that decides which type
// a cache's database is opened as (default_database_type, the non_bdb_*
// migration): nothing to do while every enabled cache would be opened as
// it is; one that would not needs a restart, as a change of the database
// itself does. A cache that the reload would turn off has that change's
// own warning.
func (r *reloading) databaseType(c config.Change) {
	for i := range r.old.Caches {
		oc, nc := &r.old.Caches[i], &r.new.Caches[i]
		if oc.Enabled && nc.Enabled && (oc.DBType != nc.DBType || oc.DBPath != nc.DBPath) {
			r.restart(c.Name, c.From, c.To, fmt.Sprintf("the %s cache would be opened as %s:%s instead of %s:%s",
				oc.Name, nc.DBType, nc.DBPath, oc.DBType, oc.DBPath))
			return
		}
	}
	c.CopyValue(r.now, r.new)
	r.changed(c.Name, quoted(c.From), quoted(c.To), "no enabled cache is opened otherwise")
}

// cacheLogLevel applies cache i's new *_tls_loglevel.
func (r *reloading) cacheLogLevel(i int, c config.Change) {
	nc := &r.new.Caches[i]
	if ct := r.d.caches[i]; ct.Cache != nil {
		ct.Cache.SetLogCache(nc.LogCache)
	}
	r.changed(c.Name, quoted(c.From), quoted(c.To), "")
	now := &r.now.Caches[i]
	now.TLSLogLevel, now.LogCache, now.LogLevel = nc.TLSLogLevel, nc.LogCache, nc.LogLevel
}

// cacheBounds applies cache i's new *_max_entries and *_max_bytes, once
// for both.
func (r *reloading) cacheBounds(i int) {
	if r.bounded[i] {
		return
	}
	r.bounded[i] = true
	oc, nc := &r.old.Caches[i], &r.new.Caches[i]
	note := ""
	if ct := r.d.caches[i]; ct.Cache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		before, _ := ct.Cache.Stats(ctx)
		if err := ct.Cache.SetLimits(ctx, scache.Limits{MaxEntries: nc.MaxEntries, MaxBytes: nc.MaxBytes}); err != nil {
			// The new bounds are set; what is over them goes as
			// changes are committed.
			maillog.Warnf(r.d.log, "%s TLS cache: applying its new bounds: %v", oc.Name, err)
		}
		if after, err := ct.Cache.Stats(ctx); err == nil && after.Store.Evictions > before.Store.Evictions {
			note = fmt.Sprintf("%d entries evicted", after.Store.Evictions-before.Store.Evictions)
		}
	}
	// The evictions are told once, with the last bound that changed.
	if oc.MaxEntries != nc.MaxEntries {
		n := note
		if oc.MaxBytes != nc.MaxBytes {
			n = ""
		}
		r.changed(oc.Name+"_tls_session_cache_max_entries", strconv.Itoa(oc.MaxEntries), strconv.Itoa(nc.MaxEntries), n)
	}
	if oc.MaxBytes != nc.MaxBytes {
		r.changed(oc.Name+"_tls_session_cache_max_bytes", strconv.FormatInt(oc.MaxBytes, 10), strconv.FormatInt(nc.MaxBytes, 10), note)
	}
	r.now.Caches[i].MaxEntries, r.now.Caches[i].MaxBytes = nc.MaxEntries, nc.MaxBytes
}

// reloadMetrics moves /metrics from the old address to addr ("" for
// nowhere) and reports whether it did. The new listener is opened before
// the old one closes; one that cannot be opened (after the privilege drop
// a port below 1024 cannot be bound) leaves the old one serving.
func (d *daemon) reloadMetrics(old, addr string) bool {
	var l net.Listener
	if addr != "" {
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			keep := "no metrics served"
			if old != "" {
				keep = "still serving http://" + old + "/metrics"
			}
			if errors.Is(err, os.ErrPermission) {
				maillog.WarnAlwaysf(d.log, "tlsmgr_metrics_address changed from %q to %q: %v; that needs a restart (the daemon no longer has the privileges to bind it); %s",
					old, addr, err, keep)
			} else {
				maillog.WarnAlwaysf(d.log, "tlsmgr_metrics_address changed from %q to %q: %v; %s", old, addr, err, keep)
			}
			return false
		}
	}
	d.stopMetrics()
	if d.metricsListener != nil {
		d.metricsListener.Close()
	}
	d.metricsListener = l
	if l != nil {
		d.metricsHTTP = d.startMetrics(l)
	} else {
		maillog.Infof(d.log, "no longer serving metrics")
	}
	return true
}

package daemon

// Live reload, standalone only: SIGHUP re-reads main.cf as start-up did
// (the same MAIL_CONFIG directory or built-in defaults, the same -o
// overrides on top) and applies in place, keeping every cache entry,
// what can change while running. Everything else is logged as needing a
// restart, one warning per parameter, and left as it is.
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
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/server"
)

// readConfig reads the configuration from where start-up found it
// (d.cfgDir, d.cfgExtra) with the command line's -o overrides, and
// validates it.
func (d *daemon) readConfig() (*config.Config, *config.Params, string, error) {
	cfg, err := config.Load(d.cfgDir, d.cfgExtra, d.opts.Overrides)
	if err != nil {
		return nil, nil, "", err
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
		return cfg, nil, "", err
	}
	hostname, _ := cfg.String("myhostname")
	return cfg, p, hostname, nil
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

// restartOnly are the parameters a running daemon cannot change: they
// name what start-up opened (a database, the entropy source, a file, the
// log) or how the service was set up. Values are compared as the daemon
// uses them, so that "3600" and "1h" are no change.
var restartOnly = []struct {
	name  string
	value func(p *config.Params) string
}{
	{"tls_random_source", func(p *config.Params) string { return p.RandomSource }},
	{"tls_random_bytes", func(p *config.Params) string { return strconv.Itoa(p.RandomBytes) }},
	{"tls_random_exchange_name", func(p *config.Params) string { return p.ExchangeName }},
	{"tls_random_prng_update_period", func(p *config.Params) string { return seconds(p.PRNGUpdatePeriod) }},
	{"tls_random_reseed_period", func(p *config.Params) string { return seconds(p.ReseedPeriod) }},
	{"tlsmgr_ticket_key_database", func(p *config.Params) string { return p.TicketKeyDatabase }},
	{"tlsmgr_ticket_key_persistence", func(p *config.Params) string { return yesNo(p.TicketKeyPersistence) }},
	{"data_directory", func(p *config.Params) string { return p.DataDirectory }},
	{"queue_directory", func(p *config.Params) string { return p.QueueDirectory }},
	{"mail_owner", func(p *config.Params) string { return p.MailOwner }},
	{"daemon_timeout", func(p *config.Params) string { return seconds(p.DaemonTimeout) }},
	{"ipc_timeout", func(p *config.Params) string { return seconds(p.IPCTimeout) }},
	{"syslog_facility", func(p *config.Params) string { return p.SyslogFacility }},
	{"syslog_name", func(p *config.Params) string { return p.SyslogName }},
	{"maillog_file", func(p *config.Params) string { return p.MaillogFile }},
	{"tlsmgr_max_attribute_size", func(p *config.Params) string { return strconv.Itoa(p.MaxAttributeSize) }},
	{"tlsmgr_max_request_size", func(p *config.Params) string { return strconv.Itoa(p.MaxRequestSize) }},
	// Who speaks first is decided once, from the Postfix found before
	// the chroot.
	{"tlsmgr_protocol_announcement", func(p *config.Params) string { return p.ProtocolAnnouncement }},
	{"command_directory", func(p *config.Params) string { return p.CommandDirectory }},
	{"daemon_directory", func(p *config.Params) string { return p.DaemonDirectory }},
}

func seconds(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// reload re-reads main.cf and applies what may change in place. A
// configuration with an error changes nothing.
func (d *daemon) reload() {
	done := d.wd.Start("reload of main.cf")
	defer done()
	where := "the configuration (no main.cf: built-in defaults and -o)"
	if d.cfgDir != "" {
		where = filepath.Join(d.cfgDir, "main.cf")
	}
	conf, p, _, err := d.readConfig()
	if err == nil {
		err = server.CheckLimits(p.ClientLimit)
	}
	if err != nil {
		d.log.Error("reload of %s failed: %v; nothing changed", where, err)
		return
	}
	for _, w := range p.Warnings {
		d.log.WarnAlways("%s", w)
	}
	old := d.params
	now := *old // what runs once this reload is done
	now.Warnings = p.Warnings
	var changes []string
	changed := func(name, from, to, note string) {
		c := fmt.Sprintf("%s %s -> %s", name, from, to)
		if note != "" {
			c += " (" + note + ")"
		}
		changes = append(changes, c)
	}
	restart := func(name, from, to, note string) {
		if note != "" {
			note = "; " + note
		}
		d.log.WarnAlways("%s changed from %q to %q: that needs a restart; keeping %q%s", name, from, to, from, note)
	}

	for _, r := range restartOnly {
		if a, b := r.value(old), r.value(p); a != b {
			restart(r.name, a, b, "")
		}
	}
	for i := range old.Caches {
		d.reloadCache(i, conf, p, &now, changed, restart)
	}
	for _, b := range d.backends {
		if files := b.changedFiles(); len(files) > 0 {
			d.log.WarnAlways("the Redis settings of %s (%s) changed since start-up: %s; that needs a restart; keeping those of the start",
				b.name, b.settings.Path, strings.Join(files, ", "))
		}
	}
	if p.ClientLimit != old.ClientLimit {
		closed := d.srv.SetMaxClients(p.ClientLimit)
		note := ""
		if closed > 0 {
			note = fmt.Sprintf("%d idle connections closed", closed)
		}
		changed("tlsmgr_client_limit", strconv.Itoa(old.ClientLimit), strconv.Itoa(p.ClientLimit), note)
		now.ClientLimit = p.ClientLimit
	}
	if p.MetricsAddress != old.MetricsAddress && d.reloadMetrics(old.MetricsAddress, p.MetricsAddress) {
		changed("tlsmgr_metrics_address", quoted(old.MetricsAddress), quoted(p.MetricsAddress), "")
		now.MetricsAddress = p.MetricsAddress
	}
	d.params, d.conf = &now, conf
	if len(changes) == 0 {
		d.log.Info("reloaded %s: nothing changed that applies while running", where)
		return
	}
	d.log.Info("reloaded %s: %s", where, strings.Join(changes, ", "))
}

func quoted(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// reloadCache applies the new settings of cache i: its timeout, bounds
// and log level; its database, and turning it on or off (a timeout of 0
// or an empty database), need a restart.
func (d *daemon) reloadCache(i int, conf *config.Config, p *config.Params, now *config.Params,
	changed, restart func(name, from, to, note string)) {
	oc, nc := &d.params.Caches[i], &p.Caches[i]
	ct := d.caches[i]
	param := func(suffix string) string { return oc.Name + suffix }
	if oc.Database != nc.Database {
		restart(param("_tls_session_cache_database"), oc.Database, nc.Database, "")
	}
	switch {
	case oc.Timeout == nc.Timeout:
	case oc.Enabled != (oc.Database != "" && nc.Timeout > 0):
		// 0 turns the cache off, and a positive value on.
		how := "it turns the cache on"
		if oc.Enabled {
			how = "0 turns the cache off"
		}
		restart(param("_tls_session_cache_timeout"), seconds(oc.Timeout), seconds(nc.Timeout), how)
	default:
		d.srv.SetCacheTimeout(oc.Name, nc.Timeout)
		now.Caches[i].Timeout = nc.Timeout
		changed(param("_tls_session_cache_timeout"), seconds(oc.Timeout), seconds(nc.Timeout), "")
		if i == 0 {
			// Postfix derives the ticket key lifetime from it too, and
			// the ring (a fleet's included) is made for one.
			d.log.WarnAlways("%s changed from %q to %q: applied to the %s cache; session tickets keep the key lifetime of %q (0: no tickets) until a restart",
				param("_tls_session_cache_timeout"), seconds(oc.Timeout), seconds(nc.Timeout), oc.Name, seconds(oc.Timeout))
		}
	}
	if oc.MaxEntries != nc.MaxEntries || oc.MaxBytes != nc.MaxBytes {
		d.reloadBounds(i, ct, nc, now, changed)
	}
	if oc.LogCache != nc.LogCache || oc.LogLevel != nc.LogLevel {
		if ct.Cache != nil {
			ct.Cache.SetLogCache(nc.LogCache)
		}
		name := param("_tls_loglevel")
		from, _ := d.conf.String(name)
		to, _ := conf.String(name)
		changed(name, quoted(from), quoted(to), "")
		now.Caches[i].LogCache, now.Caches[i].LogLevel = nc.LogCache, nc.LogLevel
	}
}

// reloadBounds applies a cache's new *_max_entries and *_max_bytes.
func (d *daemon) reloadBounds(i int, ct server.CacheType, nc *config.CacheParams, now *config.Params,
	changed func(name, from, to, note string)) {
	oc := &d.params.Caches[i]
	note := ""
	if ct.Cache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		before, _ := ct.Cache.Stats(ctx)
		if err := ct.Cache.SetLimits(ctx, scache.Limits{MaxEntries: nc.MaxEntries, MaxBytes: nc.MaxBytes}); err != nil {
			// The new bounds are set; what is over them goes as
			// changes are committed.
			d.log.Warn("%s TLS cache: applying its new bounds: %v", oc.Name, err)
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
		changed(oc.Name+"_tls_session_cache_max_entries", strconv.Itoa(oc.MaxEntries), strconv.Itoa(nc.MaxEntries), n)
	}
	if oc.MaxBytes != nc.MaxBytes {
		changed(oc.Name+"_tls_session_cache_max_bytes", strconv.FormatInt(oc.MaxBytes, 10), strconv.FormatInt(nc.MaxBytes, 10), note)
	}
	now.Caches[i].MaxEntries, now.Caches[i].MaxBytes = nc.MaxEntries, nc.MaxBytes
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
				d.log.WarnAlways("tlsmgr_metrics_address changed from %q to %q: %v; that needs a restart (the daemon no longer has the privileges to bind it); %s",
					old, addr, err, keep)
			} else {
				d.log.WarnAlways("tlsmgr_metrics_address changed from %q to %q: %v; %s", old, addr, err, keep)
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
		d.log.Info("no longer serving metrics")
	}
	return true
}

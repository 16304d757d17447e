package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/master"
	"github.com/gotlsmgr/tlsmgr/internal/prng"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/boltstore"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey/keyfile"
)

// openFiles opens the entropy source, the exchange file, the caches and
// the key store, all before the jail, creating files as the mail owner.
func (d *daemon) openFiles() error {
	p := d.params
	exch := p.ExchangeName
	if exch != "" {
		var warnings []string
		exch, warnings = master.DataRedirectFile(exch, p.DataDirectory, p.MailOwner, d.uid)
		d.warnAll(warnings)
		d.noteNew(exch)
	}
	err := d.asOwner(func() error {
		var err error
		d.pool, err = prng.Open(prng.Options{
			Source:       p.RandomSource,
			Bytes:        p.RandomBytes,
			ExchangeFile: exch,
			UpdatePeriod: p.PRNGUpdatePeriod,
			ReseedPeriod: p.ReseedPeriod,
			Logger:       d.log,
			Verbose:      d.opts.Verbose > 0,
			Watch:        d.wd.Start,
		})
		return err
	})
	if err != nil {
		return err
	}
	for _, cp := range p.Caches {
		ct := server.DisabledCache(cp.Name, cp.Timeout)
		if cp.Enabled && cp.RedirectedFrom != "" && p.LogRedirect {
			// As Postfix 3.11 logs its non_bdb_migration_level redirects.
			maillog.Infof(d.log, "redirecting %s to %s:%s", cp.Database, cp.DBType, cp.DBPath)
		}
		if cp.Enabled {
			store, batch, err := d.openStore(cp)
			if err != nil {
				return fmt.Errorf("%s TLS session cache %s: %w", cp.Name, cp.Database, err)
			}
			ct = server.EnabledCache(scache.New(scache.Config{
				Name:       cp.Name,
				Database:   cp.Database,
				Timeout:    cp.Timeout,
				LogCache:   cp.LogCache,
				SweepBatch: batch,
				Mix:        d.pool.Pool().Mix,
				Log:        d.log,
				Watch:      d.wd.Start,
			}, store))
		}
		d.caches = append(d.caches, ct)
	}
	return d.openKeys()
}

// storeType opens the caches of one database type. Types are chosen
// through storeTypes, as Postfix's dict_open does with its table: a new
// type is one entry.
type storeType struct {
	open func(d *daemon, cp config.CacheParams, lim scache.Limits) (scache.Store, error)
	// sweepBatch is how many expired entries one sweep call removes. A
	// file store writes every batch in one transaction that update
	// requests wait behind, so its batches are small.
	sweepBatch int
	file       bool // the state is a file of ours (StateFiles)
}

var (
	memoryType = storeType{open: openMemoryStore, sweepBatch: 100}
	// The Postfix table types that name a local file; we keep such a
	// cache in our own crash-safe file at that path.
	fileType = storeType{open: openFileStore, sweepBatch: 16, file: true}
)

var storeTypes = map[string]storeType{
	"memory": memoryType,
	// Shared by a fleet; Redis expires entries itself, the sweep keeps
	// the bounded local copy.
	"redis": {open: openRedisStore, sweepBatch: 100},
	"btree": fileType, "hash": fileType, "lmdb": fileType, "sdbm": fileType, "dbm": fileType, "cdb": fileType,
}

func (d *daemon) openStore(cp config.CacheParams) (scache.Store, int, error) {
	typ, ok := storeTypes[cp.DBType]
	if !ok {
		return nil, 0, fmt.Errorf("unsupported database type %q (use memory:, redis: or a file type such as btree:)", cp.DBType)
	}
	st, err := typ.open(d, cp, scache.Limits{MaxEntries: cp.MaxEntries, MaxBytes: cp.MaxBytes})
	return st, typ.sweepBatch, err
}

func openMemoryStore(_ *daemon, _ config.CacheParams, lim scache.Limits) (scache.Store, error) {
	return memstore.New(lim), nil
}

func openFileStore(d *daemon, cp config.CacheParams, lim scache.Limits) (scache.Store, error) {
	spec, warnings := master.DataRedirectMap(cp.Database, d.params.DataDirectory, d.params.MailOwner, d.uid)
	d.warnAll(warnings)
	_, path, _ := strings.Cut(spec, ":")
	d.noteNew(path)
	var st scache.Store
	err := d.asOwner(func() error {
		var err error
		st, err = boltstore.Open(path, lim, boltstore.Options{Logger: d.log})
		return err
	})
	return st, err
}

// ticketKeyFile is where keys are kept when tlsmgr_ticket_key_persistence
// is on; a file of our own, not one Postfix knows.
const ticketKeyFile = "tlsmgr_ticket_keys"

// openKeys sets up the ticket key ring; tickets follow the smtpd timeout
// whether or not the smtpd cache database is set, as in Postfix.
func (d *daemon) openKeys() error {
	opts := tktkey.Options{
		Timeout: d.params.Caches[0].Timeout,
		Rand:    d.pool.Pool(),
		Log:     d.log,
	}
	switch {
	case d.params.TicketKeyDatabase != "":
		if err := d.fleetKeys(&opts); err != nil {
			return err
		}
	case d.params.TicketKeyPersistence:
		path := filepath.Join(d.params.DataDirectory, ticketKeyFile)
		d.noteNew(path)
		err := d.asOwner(func() error {
			f, err := keyfile.Open(path, d.log)
			if err == nil {
				d.keyStore, opts.Store = f, f
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("session ticket key file: %w", err)
		}
	}
	if !d.params.TicketKeyPersistence {
		path := filepath.Join(d.params.DataDirectory, ticketKeyFile)
		if err := d.asOwner(func() error { return d.wipeFile(path) }); err != nil {
			maillog.Warnf(d.log, "remove old session ticket key file: %v", err)
		}
	}
	var err error
	d.keys, err = tktkey.NewManager(context.Background(), opts)
	return err
}

// wipeFile overwrites a secret file with zeros and removes it: keys saved
// while persistence was on must not outlive it. Whatever else has taken
// the name (a link, another account's file) is unlinked unwritten.
func (d *daemon) wipeFile(path string) error {
	f, err := safefile.Open(path, os.O_WRONLY, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		// Not a file of ours to write (a link, another account's
		// file): the name is ours all the same, and must go.
		maillog.Warnf(d.log, "session ticket key file: %v; removing the name without writing to it", err)
		return os.Remove(path)
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Write(make([]byte, fi.Size()))
		if err == nil {
			err = f.Sync()
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return os.Remove(path)
}

// noteNew remembers path, about to be opened, if it does not exist yet.
func (d *daemon) noteNew(path string) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		d.created = append(d.created, path)
	}
}

// removeCreated removes the files noted by noteNew, after closeAll, as
// the mail owner: the names are in directories of the owner's.
func (d *daemon) removeCreated() {
	d.asOwner(func() error {
		for _, path := range d.created {
			os.Remove(path)
		}
		return nil
	})
}

func (d *daemon) warnAll(warnings []string) {
	for _, w := range warnings {
		maillog.WarnAlwaysf(d.log, "%s", w)
	}
}

// closeAll saves state and releases everything, in reverse order of
// opening: the PRNG's last exchange-file update happens here.
func (d *daemon) closeAll() {
	if d.metricsListener != nil {
		d.metricsListener.Close()
	}
	if d.keys != nil {
		d.keys.Close()
	}
	if d.keyStore != nil {
		d.keyStore.Close()
	}
	for _, ct := range d.caches {
		if ct.Cache != nil {
			if err := ct.Cache.Close(); err != nil {
				maillog.Warnf(d.log, "close %s TLS cache: %v", ct.Name, err)
			}
		}
	}
	d.closeBackends()
	if d.pool != nil {
		if err := d.pool.Close(); err != nil {
			maillog.Warnf(d.log, "save PRNG state: %v", err)
		}
	}
	for _, l := range d.listeners {
		l.Close()
	}
	if d.status != nil {
		d.status.Close()
	}
}

// StateFiles returns the files in which a daemon configured by p keeps
// its state, for a package's purge: the file caches' (after the same
// redirection to data_directory), their set-aside damaged copies, and the
// ticket key file. ownerUID is the mail owner's. Files of Postfix's (the
// PRNG exchange file) and those a fleet keeps in Redis are not listed;
// nor is anything that does not exist.
func StateFiles(p *config.Params, ownerUID int) []string {
	var files []string
	add := func(path string) {
		if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() {
			files = append(files, path)
		}
	}
	for _, cp := range p.Caches {
		if !cp.Enabled || !storeTypes[cp.DBType].file {
			continue
		}
		spec, _ := master.DataRedirectMap(cp.Database, p.DataDirectory, p.MailOwner, ownerUID)
		_, path, _ := strings.Cut(spec, ":")
		add(path)
		if aside, err := filepath.Glob(globEscape(path) + ".corrupt-*"); err == nil {
			for _, a := range aside {
				add(a)
			}
		}
	}
	add(filepath.Join(p.DataDirectory, ticketKeyFile))
	slices.Sort(files)
	return slices.Compact(files)
}

// globEscape quotes the metacharacters of filepath.Match in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

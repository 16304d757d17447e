package config

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Session timeout bounds, from Postfix 3.7: tlsmgr raises a positive
// timeout below TLS_SESSION_LIFEMIN (tls_scache.h), and main.cf values
// above MAX_*_TLS_SCACHETIME (mail_params.h) are a fatal error.
const (
	MinSessionTimeout = 120 * time.Second
	MaxSessionTimeout = 8640000 * time.Second
)

// MaxRandomPeriod is where tlsmgr clamps the PRNG reseed and exchange
// periods (INT_MAX / UCHAR_MAX seconds) so that a random fraction of the
// period cannot overflow.
const MaxRandomPeriod = (math.MaxInt32 / 255) * time.Second

// MinAttributeSize is the smallest tlsmgr_max_attribute_size we accept:
// a session is a few hundred bytes at least.
const MinAttributeSize = 1024

// CacheParams is one session cache type.
type CacheParams struct {
	Name string // "smtpd", "smtp" or "lmtp"
	// Database is the expanded <name>_tls_session_cache_database, e.g.
	// "btree:/var/lib/postfix/smtpd_scache". For an enabled cache it is
	// what Postfix's tlsmgr opens: a name without a type gets
	// $default_database_type, as data_redirect_map() does.
	Database string
	// DBType is the type opened: Database's before the first ':', or
	// for an enabled hash: or btree: database under the non-Berkeley-DB
	// migration (non_bdb_migration_level, Postfix 3.11), the type
	// Postfix opens instead (e.g. lmdb); RedirectedFrom is then the type
	// of Database.
	DBType         string
	DBPath         string // after Database's first ':'
	RedirectedFrom string
	Timeout        time.Duration // 0 (disabled) or in [MinSessionTimeout, MaxSessionTimeout]
	Enabled        bool          // Database != "" && Timeout > 0
	MaxEntries     int
	MaxBytes       int64
	// TLSLogLevel is <name>_tls_loglevel as expanded; LogCache and
	// LogLevel are what it says.
	TLSLogLevel string
	LogCache    bool // <name>_tls_loglevel asks for cache transaction logging
	// LogLevel is the highest numeric level in <name>_tls_loglevel, 0 if
	// none.
	LogLevel int
}

// Params are the validated parameters tlsmgr runs with. Each field is
// one parameter's (the table in table.go says which, how it is read and
// what a reload does with it), or is worked out from some (derivedFields).
type Params struct {
	Caches [3]CacheParams // smtpd, smtp, lmtp in that order

	RandomSource string // "dev:PATH", "egd:PATH", a file name, or "" (none)
	// RandomBytes is at least 1 and fits a C int, as in Postfix, which
	// then reads devices and EGD at most 255 bytes at a time.
	RandomBytes      int
	ExchangeName     string        // "" disables the exchange file
	PRNGUpdatePeriod time.Duration // in [1s, MaxRandomPeriod]
	ReseedPeriod     time.Duration // in [1s, MaxRandomPeriod]

	DataDirectory, QueueDirectory string
	// ConfigDirectory is read only so that a bad expansion of it (e.g. a
	// reference loop) stays a start-up error; nothing uses the value.
	ConfigDirectory string
	// DaemonDirectory and CommandDirectory hold Postfix's programs: the
	// daemon asks them which Postfix version its clients are.
	DaemonDirectory, CommandDirectory string

	MailOwner                 string
	DaemonTimeout, IPCTimeout time.Duration // >= 1s

	SyslogFacility, SyslogName, MaillogFile string

	MaxAttributeSize, MaxRequestSize, ClientLimit int
	TicketKeyPersistence                          bool
	// TicketKeyDatabase shares the ticket-key ring with every daemon on
	// the same store: "" (keys of this host only) or "redis:/path/to/settings.cf".
	TicketKeyDatabase string
	// MetricsAddress is where /metrics is served (host:port), "" for
	// nowhere. The listener is opened before the chroot.
	MetricsAddress string

	// NBDBLevel is non_bdb_migration_level; NBDBCustomMapping,
	// DefaultDBType and CacheDBType are the other parameters of the
	// non-Berkeley-DB migration as expanded (empty if they do not
	// expand: they are checked where an enabled cache needs them).
	// CacheParams.DBType says what they come to.
	NBDBLevel, NBDBCustomMapping, DefaultDBType, CacheDBType string
	// LogRedirect is non_bdb_migration_log_redirect: Postfix logs
	// "redirecting TYPE:NAME to NEWTYPE:NAME" for each redirected cache
	// (CacheParams.RedirectedFrom).
	LogRedirect bool
	// ProtocolAnnouncement says whether the server speaks first on a
	// new connection: "yes" (Postfix 3.6 and later), "no" (before 3.6),
	// or "auto": as the installed Postfix's version wants.
	ProtocolAnnouncement string
	// MyHostname is $myhostname, "" where it is not set (or does not
	// expand): the log then has the system's host name.
	MyHostname string

	// Warnings are problems Postfix logs but runs with, e.g. an unknown
	// *_tls_loglevel keyword (which turns that logging off).
	Warnings []string
}

// syslogFacilities are the names Postfix accepts on Linux.
var syslogFacilities = map[string]bool{
	"auth": true, "authpriv": true, "cron": true, "daemon": true, "ftp": true,
	"kern": true, "lpr": true, "mail": true, "news": true, "syslog": true,
	"user": true, "uucp": true, "local0": true, "local1": true, "local2": true,
	"local3": true, "local4": true, "local5": true, "local6": true, "local7": true,
}

// paramReader collects the first error so Params reads like a list.
type paramReader struct {
	c   *Config
	err error
}

func (r *paramReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *paramReader) str(name string) string {
	v, err := r.c.String(name)
	r.fail(err)
	return v
}

// nonEmpty is a string Postfix reads with a minimum length of 1.
func (r *paramReader) nonEmpty(name string) string {
	v := r.str(name)
	if r.err == nil && v == "" {
		r.fail(&ValueError{Param: name, Value: v, Reason: "must not be empty"})
	}
	return v
}

// read reads the parameter pm into its field of p, as the table says.
func (r *paramReader) read(pm *Param, p *Params) {
	if pm.field == nil {
		return
	}
	var err error
	switch dst := pm.field(p).(type) {
	case *string:
		var v string
		if v, err = r.c.String(pm.Name); err != nil {
			if pm.lenient {
				return
			}
			break
		}
		*dst = v
		switch {
		case pm.Min > 0 && v == "":
			err = &ValueError{Param: pm.Name, Value: v, Reason: "must not be empty"}
		case pm.check != nil:
			if reason := pm.check(v); reason != "" {
				err = &ValueError{Param: pm.Name, Value: v, Reason: reason}
			}
		}
	case *time.Duration:
		var d time.Duration
		if d, err = r.c.Time(pm.Name); err != nil {
			break
		}
		secs := secondsOf(d)
		err = r.bounds(pm, secs, "s")
		switch {
		case secs > 0 && secs < pm.Floor:
			secs = pm.Floor
		case pm.Ceil > 0 && secs > pm.Ceil:
			secs = pm.Ceil
		}
		*dst = time.Duration(secs) * time.Second
	case *int:
		var n int64
		if pm.Kind == KindSize {
			n, err = r.c.Size(pm.Name)
		} else {
			n, err = r.c.Int(pm.Name)
		}
		if err == nil {
			err = r.bounds(pm, n, "")
			*dst = int(n)
		}
	case *int64:
		var n int64
		if n, err = r.c.Size(pm.Name); err == nil {
			err = r.bounds(pm, n, "")
			*dst = n
		}
	case *bool:
		*dst, err = r.c.Bool(pm.Name)
	default:
		panic(fmt.Sprintf("config: parameter %s has a field of type %T", pm.Name, dst))
	}
	r.fail(err)
}

// bounds wants pm.Min <= v <= pm.Max; a zero Max means no upper bound.
func (r *paramReader) bounds(pm *Param, v int64, unit string) error {
	var reason string
	switch {
	case v < pm.Min:
		reason = fmt.Sprintf("must be at least %d%s", pm.Min, unit)
	case pm.Max != 0 && v > pm.Max:
		reason = fmt.Sprintf("must be at most %d%s", pm.Max, unit)
	default:
		return nil
	}
	value, _ := r.c.String(pm.Name)
	return &ValueError{Param: pm.Name, Value: value, Reason: reason}
}

// Params reads and validates everything tlsmgr uses. The first problem
// is returned as an error naming the parameter and its value.
func (c *Config) Params() (*Params, error) {
	r := &paramReader{c: c}
	p := &Params{}
	for i := range table {
		r.read(&table[i], p)
	}

	// As configured, for the duplicate test, which Postfix makes before
	// a type is added.
	var written [len(CacheTypes)]string
	mig := &migration{r: r, level: p.NBDBLevel}
	for i, name := range CacheTypes {
		cp := &p.Caches[i]
		cp.Name = name
		written[i] = cp.Database
		cp.Enabled = cp.Database != "" && cp.Timeout > 0
		// Only an enabled cache is opened, and only its name matters.
		if cp.Enabled && r.err == nil {
			p.Warnings = append(p.Warnings, mig.resolve(cp, name+"_tls_session_cache_database")...)
		} else if typ, path, hasColon := strings.Cut(cp.Database, ":"); hasColon {
			cp.DBType, cp.DBPath = typ, path
		}
		var warning string
		cp.LogCache, cp.LogLevel, warning = tlsLogMask(name+"_tls_loglevel", cp.TLSLogLevel)
		// tlsmgr parses the level only for a cache it opens.
		if warning != "" && cp.Enabled {
			p.Warnings = append(p.Warnings, warning)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	// tlsmgr.c refuses two enabled caches with the same database, comparing
	// the expanded "type:name" strings exactly.
	for i := range p.Caches {
		for j := 0; j < i; j++ {
			a, b := &p.Caches[j], &p.Caches[i]
			if !a.Enabled || !b.Enabled {
				continue
			}
			// A redis: database names a settings file, not the data:
			// every cache keeps its entries apart under its own name.
			if a.DBType == "redis" && b.DBType == "redis" {
				continue
			}
			if wa, wb := written[j], written[i]; wa == wb {
				return nil, &ValueError{Param: b.Name + "_tls_session_cache_database", Value: wb,
					Reason: fmt.Sprintf("do not use the same TLS cache file %s for %s and %s", wb, a.Name, b.Name)}
			}
			// Postfix lets "btree:/x" and "hash:/x" through although both
			// are /x.db on disk; we only warn, to stay compatible.
			if a.DBPath == b.DBPath {
				p.Warnings = append(p.Warnings, fmt.Sprintf("TLS caches %s (%s) and %s (%s) use the same file name",
					a.Name, written[j], b.Name, written[i]))
			}
		}
	}

	if p.MaxRequestSize < p.MaxAttributeSize {
		r.fail(&ValueError{Param: "tlsmgr_max_request_size", Value: r.str("tlsmgr_max_request_size"),
			Reason: fmt.Sprintf("must be at least tlsmgr_max_attribute_size (%d)", p.MaxAttributeSize)})
	}
	if p.TicketKeyDatabase != "" {
		typ, path, _ := strings.Cut(p.TicketKeyDatabase, ":")
		switch {
		case typ != "redis" || !strings.HasPrefix(path, "/"):
			r.fail(&ValueError{Param: "tlsmgr_ticket_key_database", Value: p.TicketKeyDatabase,
				Reason: "want redis:/absolute/path/to/settings.cf"})
		case p.TicketKeyPersistence:
			r.fail(&ValueError{Param: "tlsmgr_ticket_key_persistence", Value: "yes",
				Reason: "a shared ring (tlsmgr_ticket_key_database) is not also kept in a local file"})
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	p.Warnings = append(p.Warnings, c.lookalikes()...)
	return p, nil
}

// tlsLogKeywords are the words of Postfix's TLS log level table
// (tls_misc.c), true for those that include cache logging.
var tlsLogKeywords = map[string]bool{
	"0": false, "none": false, "1": false, "routine": false,
	"2": true, "debug": true, "3": true, "ssl-expert": true,
	"4": true, "ssl-developer": true,
	"5": true, "6": true, "7": true, "8": true, "9": true,
	"summary": false, "untrusted": false, "peercert": false, "certmatch": false,
	"verbose": false, "cache": true, "dane": false, "ssl-debug": false,
	"ssl-handshake-packet-dump": false, "ssl-session-packet-dump": false,
	// Postfix 3.12: smtp(8), smtpd(8) and tlsproxy(8) write a protocol
	// trace file; nothing for tlsmgr.
	"trace": false,
}

// tlsLogMask reads a *_tls_loglevel value as Postfix's tls_log_mask():
// words separated by commas or white space, matched in any case. An
// unknown word turns all of it off with a warning; Postfix does not
// treat it as fatal.
func tlsLogMask(param, value string) (logCache bool, level int, warning string) {
	words := strings.FieldsFunc(value, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n'
	})
	for _, w := range words {
		lw := strings.ToLower(w)
		cache, known := tlsLogKeywords[lw]
		if !known || !isASCII(w) {
			return false, 0, fmt.Sprintf("unknown %s value %q in %q", param, w, value)
		}
		logCache = logCache || cache
		if len(lw) == 1 && lw[0] >= '0' && lw[0] <= '9' {
			level = max(level, int(lw[0]-'0'))
		}
	}
	return logCache, level, ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

package config

import (
	"fmt"
	"math"
	"net"
	"reflect"
	"strconv"
	"time"
)

// The parameter table: every main.cf parameter tlsmgr knows is defined
// here once, with its default as Postfix writes it, how it is read, its
// limits, the Params field it sets and what a reload does with a change.
// The defaults (builtinDefaults), Params, the list of tlsmgr's own
// parameters, the daemon's reload (Changes) and the tests of the man page
// all come from it.

// Kind is how tlsmgr reads a parameter.
type Kind uint8

const (
	// KindString is text, used as expanded; Param.Min 1 refuses an
	// empty value.
	KindString Kind = iota + 1
	// KindTime is a number and an optional unit s, m, h, d or w (a bare
	// number takes the unit of the default): see Config.Time.
	KindTime
	// KindInt is a decimal integer: see Config.Int.
	KindInt
	// KindSize is a byte count with an optional k, m or g (our own
	// parameters only): see Config.Size.
	KindSize
	// KindBool is yes or no: see Config.Bool.
	KindBool
	// KindReadOnly is a parameter the daemon sets itself (process_name):
	// main.cf cannot change it.
	KindReadOnly
	// KindReference is a parameter tlsmgr does not read: it is known
	// only so that the values of others can refer to it
	// ($multi_instance_name in syslog_name's default).
	KindReference
)

// Reload is what a reload of main.cf (SIGHUP, standalone) does with a
// changed value.
type Reload uint8

const (
	// ReloadLive: the reload applies it in place.
	ReloadLive Reload = iota + 1
	// ReloadRestart: it names something start-up opened or set up; the
	// reload warns and keeps the value running.
	ReloadRestart
	// ReloadNone: nothing running uses the value (a read-only or only
	// referenced parameter, or config_directory); parameters whose
	// values refer to it are compared themselves.
	ReloadNone
)

func (k Kind) String() string {
	names := [...]string{KindString: "string", KindTime: "time", KindInt: "int", KindSize: "size",
		KindBool: "bool", KindReadOnly: "read-only", KindReference: "reference"}
	if int(k) < len(names) && names[k] != "" {
		return names[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

func (r Reload) String() string {
	names := [...]string{ReloadLive: "live", ReloadRestart: "restart", ReloadNone: "none"}
	if int(r) < len(names) && names[r] != "" {
		return names[r]
	}
	return "Reload(" + strconv.Itoa(int(r)) + ")"
}

// Param is one main.cf parameter, as the table defines it.
type Param struct {
	Name string
	// Default is the built-in default as Postfix writes it (postconf
	// -d), unexpanded; "" is empty. Unused with NoDefault.
	Default string
	// NoDefault: there is no built-in text; the value is the system's
	// (myhostname) or the process's (process_id).
	NoDefault bool
	Kind      Kind
	// Min and Max bound a number (seconds for KindTime, bytes for
	// KindSize); Max 0 is no upper bound. For KindString, Min 1 refuses
	// an empty value.
	Min, Max int64
	// Floor raises a positive time below it to it, and Ceil lowers a
	// time above it to it (seconds; 0 for none), after Min and Max are
	// checked: Postfix's tlsmgr sanitises those values rather than
	// refuse them.
	Floor, Ceil int64
	Reload      Reload
	// Own: tlsmgr's own parameter, which no Postfix knows (postconf
	// reports it as unused unless master.cf declares it).
	Own bool
	// Since is the Postfix release that added the parameter
	// (major*1000 + minor) when that is after 3.7; 0 otherwise.
	Since int

	// lenient: an expansion error leaves the field empty rather than
	// fail Params; what uses the value checks it there (the database
	// types of the non-Berkeley-DB migration), or never failed on it
	// (myhostname, for the log).
	lenient bool
	// check says why a KindString value is refused, or "".
	check func(v string) string
	// field is the Params field the value goes to: a *string, *int,
	// *int64, *bool or *time.Duration as Kind says. Nil exactly for
	// KindReadOnly and KindReference.
	field func(p *Params) any
}

// secondsOf is d in whole seconds, for the table's limits.
func secondsOf(d time.Duration) int64 { return int64(d / time.Second) }

// maxCInt bounds the numbers that end up in ints, as Postfix bounds its
// int parameters, which are C ints.
const maxCInt = math.MaxInt32

// table is the one list of parameters, in the order Params reads them
// (the first problem found is the one reported) and the daemon reports
// changes.
var table = func() []Param {
	t := []Param{
		// Every Postfix 3.11 daemon reads these, tlsmgr included. The
		// database types are read where an enabled cache needs them. A
		// reload applies a change that opens no enabled cache otherwise
		// (nothing to do); one that would needs a restart, as a change
		// of the database itself does (DatabaseTypeParams).
		{Name: paramNBDBLevel, Default: nbdbDisable, Kind: KindString, Reload: ReloadLive, Since: 3011,
			check: oneOf(nbdbDisable, nbdbRedirect, nbdbReindex),
			field: func(p *Params) any { return &p.NBDBLevel }},
		{Name: "non_bdb_migration_log_redirect", Default: "yes", Kind: KindBool, Reload: ReloadRestart, Since: 3011,
			field: func(p *Params) any { return &p.LogRedirect }},
		{Name: paramNBDBCustom, Default: "", Kind: KindString, Reload: ReloadLive, Since: 3011, lenient: true,
			field: func(p *Params) any { return &p.NBDBCustomMapping }},
		// Postfix 3.11 reads default_cache_db_type for the caches that
		// were btree: before: upstream's default is btree, Debian's
		// build (3.11.7-1, which also sets default_database_type to
		// cdb) says lmdb. A cache named "${default_cache_db_type}:..."
		// is our own file all the same. The migration redirects hash:
		// to the first type and btree: to the second.
		{Name: paramDBType, Default: "hash", Kind: KindString, Reload: ReloadLive, lenient: true,
			field: func(p *Params) any { return &p.DefaultDBType }},
		{Name: paramCacheDBType, Default: "lmdb", Kind: KindString, Reload: ReloadLive, Since: 3011, lenient: true,
			field: func(p *Params) any { return &p.CacheDBType }},
	}
	for i, name := range CacheTypes {
		t = append(t,
			Param{Name: name + "_tls_session_cache_database", Default: "", Kind: KindString, Reload: ReloadRestart,
				field: func(p *Params) any { return &p.Caches[i].Database }},
			// Postfix's check_mail_conf_time() makes a timeout above the
			// maximum fatal rather than clamping it; so do we. Negative
			// values never get here: the time syntax has no sign. A
			// reload that turns the cache on or off (0) needs a restart.
			Param{Name: name + "_tls_session_cache_timeout", Default: "3600s", Kind: KindTime,
				Max: secondsOf(MaxSessionTimeout), Floor: secondsOf(MinSessionTimeout), Reload: ReloadLive,
				field: func(p *Params) any { return &p.Caches[i].Timeout }},
			Param{Name: name + "_tls_session_cache_max_entries", Default: "100000", Kind: KindInt, Min: 1, Max: maxCInt,
				Reload: ReloadLive, Own: true, field: func(p *Params) any { return &p.Caches[i].MaxEntries }},
			Param{Name: name + "_tls_session_cache_max_bytes", Default: "128m", Kind: KindSize, Min: 1,
				Reload: ReloadLive, Own: true, field: func(p *Params) any { return &p.Caches[i].MaxBytes }},
			Param{Name: name + "_tls_loglevel", Default: "0", Kind: KindString, Reload: ReloadLive,
				field: func(p *Params) any { return &p.Caches[i].TLSLogLevel }},
		)
	}
	return append(t,
		Param{Name: "tls_random_source", Default: "dev:/dev/urandom", Kind: KindString, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.RandomSource }},
		Param{Name: "tls_random_bytes", Default: "32", Kind: KindInt, Min: 1, Max: maxCInt, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.RandomBytes }},
		Param{Name: "tls_random_exchange_name", Default: "${data_directory}/prng_exch", Kind: KindString,
			Reload: ReloadRestart, field: func(p *Params) any { return &p.ExchangeName }},
		Param{Name: "tls_random_prng_update_period", Default: "3600s", Kind: KindTime, Min: 1,
			Ceil: secondsOf(MaxRandomPeriod), Reload: ReloadRestart,
			field: func(p *Params) any { return &p.PRNGUpdatePeriod }},
		Param{Name: "tls_random_reseed_period", Default: "3600s", Kind: KindTime, Min: 1,
			Ceil: secondsOf(MaxRandomPeriod), Reload: ReloadRestart,
			field: func(p *Params) any { return &p.ReseedPeriod }},

		Param{Name: "data_directory", Default: "/var/lib/postfix", Kind: KindString, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.DataDirectory }},
		Param{Name: "queue_directory", Default: "/var/spool/postfix", Kind: KindString, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.QueueDirectory }},
		// Read only so that a bad expansion of it is a start-up error.
		Param{Name: ParamConfigDirectory, Default: DefaultConfigDir, Kind: KindString, Reload: ReloadNone,
			field: func(p *Params) any { return &p.ConfigDirectory }},
		Param{Name: "daemon_directory", Default: "/usr/lib/postfix/sbin", Kind: KindString, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.DaemonDirectory }},
		Param{Name: "command_directory", Default: "/usr/sbin", Kind: KindString, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.CommandDirectory }},
		Param{Name: "mail_owner", Default: "postfix", Kind: KindString, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.MailOwner }},
		Param{Name: "daemon_timeout", Default: "18000s", Kind: KindTime, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.DaemonTimeout }},
		Param{Name: "ipc_timeout", Default: "3600s", Kind: KindTime, Min: 1, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.IPCTimeout }},

		Param{Name: "syslog_facility", Default: "mail", Kind: KindString, Min: 1, Reload: ReloadRestart,
			check: func(v string) string {
				if !syslogFacilities[v] {
					return "unrecognized syslog facility"
				}
				return ""
			},
			field: func(p *Params) any { return &p.SyslogFacility }},
		// An expression since Postfix 3.0: the instance name if there is one.
		Param{Name: "syslog_name", Default: "${multi_instance_name?{$multi_instance_name}:{postfix}}", Kind: KindString,
			Min: 1, Reload: ReloadRestart, field: func(p *Params) any { return &p.SyslogName }},
		Param{Name: "maillog_file", Default: "", Kind: KindString, Reload: ReloadRestart,
			field: func(p *Params) any { return &p.MaillogFile }},
		// Postfix puts it in log records; read as the daemon always
		// has, an error in it leaving it empty (the system's name).
		Param{Name: "myhostname", NoDefault: true, Kind: KindString, Reload: ReloadRestart, lenient: true,
			field: func(p *Params) any { return &p.MyHostname }},

		Param{Name: "tlsmgr_max_attribute_size", Default: "65536", Kind: KindSize, Min: MinAttributeSize, Max: maxCInt,
			Reload: ReloadRestart, Own: true, field: func(p *Params) any { return &p.MaxAttributeSize }},
		Param{Name: "tlsmgr_max_request_size", Default: "262144", Kind: KindSize, Min: MinAttributeSize, Max: maxCInt,
			Reload: ReloadRestart, Own: true, field: func(p *Params) any { return &p.MaxRequestSize }},
		Param{Name: "tlsmgr_client_limit", Default: "1000", Kind: KindInt, Min: 1, Max: maxCInt,
			Reload: ReloadLive, Own: true, field: func(p *Params) any { return &p.ClientLimit }},
		Param{Name: "tlsmgr_ticket_key_persistence", Default: "no", Kind: KindBool,
			Reload: ReloadRestart, Own: true, field: func(p *Params) any { return &p.TicketKeyPersistence }},
		Param{Name: "tlsmgr_ticket_key_database", Default: "", Kind: KindString,
			Reload: ReloadRestart, Own: true, field: func(p *Params) any { return &p.TicketKeyDatabase }},
		Param{Name: "tlsmgr_metrics_address", Default: "", Kind: KindString, Reload: ReloadLive, Own: true,
			check: func(v string) string {
				if _, port, err := net.SplitHostPort(v); v != "" && (err != nil || port == "") {
					return "want host:port, e.g. 127.0.0.1:9177"
				}
				return ""
			},
			field: func(p *Params) any { return &p.MetricsAddress }},
		// Who speaks first is decided once, from the Postfix found
		// before the chroot.
		Param{Name: "tlsmgr_protocol_announcement", Default: "auto", Kind: KindString, Reload: ReloadRestart, Own: true,
			check: oneOf("auto", "yes", "no"), field: func(p *Params) any { return &p.ProtocolAnnouncement }},

		// Referenced by the defaults of others, or commonly in main.cf.
		Param{Name: "meta_directory", Default: "/etc/postfix", Kind: KindReference, Reload: ReloadNone},
		Param{Name: "shlib_directory", Default: "/usr/lib/postfix", Kind: KindReference, Reload: ReloadNone},
		Param{Name: "mail_name", Default: "Postfix", Kind: KindReference, Reload: ReloadNone},
		Param{Name: "multi_instance_name", Default: "", Kind: KindReference, Reload: ReloadNone},

		// Set by the daemon (Config.Set); process_id's default is the
		// pid of the process reading main.cf.
		Param{Name: ParamProcessID, NoDefault: true, Kind: KindReadOnly, Reload: ReloadNone},
		Param{Name: ParamProcessName, Default: "tlsmgr", Kind: KindReadOnly, Reload: ReloadNone},
		Param{Name: ParamServiceName, Default: "tlsmgr", Kind: KindReadOnly, Reload: ReloadNone},
	)
}()

// oneOf is a check that wants one of values, written exactly.
func oneOf(values ...string) func(string) string {
	want := values[0]
	for i, v := range values[1:] {
		if i == len(values)-2 {
			want += " or " + v
		} else {
			want += ", " + v
		}
	}
	return func(v string) string {
		for _, ok := range values {
			if v == ok {
				return ""
			}
		}
		return "want " + want
	}
}

// byName indexes table.
var byName = func() map[string]*Param {
	m := make(map[string]*Param, len(table))
	for i := range table {
		if m[table[i].Name] != nil {
			panic("config: parameter " + table[i].Name + " is in the table twice")
		}
		m[table[i].Name] = &table[i]
	}
	return m
}()

// Parameters returns the table, in its order.
func Parameters() []Param { return append([]Param(nil), table...) }

// Parameter returns the table's entry for name.
func Parameter(name string) (Param, bool) {
	if pm := byName[name]; pm != nil {
		return *pm, true
	}
	return Param{}, false
}

// Value is p's value of the parameter as tlsmgr uses it, as text: a time
// in seconds ("3600s"), a number in decimal, yes or no, or the expanded
// text; "" for a parameter Params does not hold (KindReadOnly,
// KindReference).
func (pm *Param) Value(p *Params) string {
	if pm.field == nil {
		return ""
	}
	switch v := pm.field(p).(type) {
	case *string:
		return *v
	case *int:
		return strconv.Itoa(*v)
	case *int64:
		return strconv.FormatInt(*v, 10)
	case *bool:
		if *v {
			return "yes"
		}
		return "no"
	case *time.Duration:
		return strconv.FormatInt(secondsOf(*v), 10) + "s"
	default:
		panic(fmt.Sprintf("config: parameter %s has a field of type %T", pm.Name, v))
	}
}

// CopyValue sets dst's value of the parameter to src's, for a reload
// that applies one parameter; a parameter Params does not hold is left
// alone.
func (pm *Param) CopyValue(dst, src *Params) {
	if pm.field == nil {
		return
	}
	to := reflect.ValueOf(pm.field(dst)).Elem()
	to.Set(reflect.ValueOf(pm.field(src)).Elem())
}

// Change is a parameter whose value differs between two Params.
type Change struct {
	Param
	From, To string // as Param.Value gives them
}

// Changes lists the parameters whose values differ from old to new, in
// the table's order. Values are compared as tlsmgr uses them, so that
// "3600" and "1h" are no change; every parameter Params holds is
// compared, whatever its Reload.
func Changes(old, new *Params) []Change {
	var changes []Change
	for i := range table {
		pm := &table[i]
		if from, to := pm.Value(old), pm.Value(new); from != to {
			changes = append(changes, Change{Param: *pm, From: from, To: to})
		}
	}
	return changes
}

// derivedFields are the fields of Params and CacheParams that no one
// parameter sets: Params works them out from the parameters listed (a
// reload compares those), or they are not configuration at all. Every
// other field is a parameter's (TestEveryFieldIsAParameter).
var derivedFields = map[string][]string{
	"Name":           nil, // the cache type
	"Enabled":        {"*_tls_session_cache_database", "*_tls_session_cache_timeout"},
	"DBType":         append([]string{"*_tls_session_cache_database"}, DatabaseTypeParams...),
	"DBPath":         {"*_tls_session_cache_database"},
	"RedirectedFrom": append([]string{"*_tls_session_cache_database"}, DatabaseTypeParams...),
	"LogCache":       {"*_tls_loglevel"},
	"LogLevel":       {"*_tls_loglevel"},
	"Warnings":       nil, // what Params found to warn about
}

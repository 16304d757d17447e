package config

import (
	"maps"
	"os"
	"strconv"
)

// DefaultConfigDir is where main.cf lives unless MAIL_CONFIG says otherwise.
const DefaultConfigDir = "/etc/postfix"

// CacheTypes are the session cache types, in the order of Params.Caches.
var CacheTypes = [3]string{"smtpd", "smtp", "lmtp"}

// Parameter names used more than once.
const (
	ParamConfigDirectory = "config_directory"
	ParamProcessID       = "process_id"
	ParamProcessName     = "process_name"
	ParamServiceName     = "service_name"
)

// builtinDefaults are Postfix 3.7's compiled-in defaults as Debian builds
// them (postconf -d), for the parameters tlsmgr reads and the few that
// those commonly reference, plus our own tlsmgr_* and cache size limits.
// Parameters that Postfix added later have the default of the first
// Debian build that has them (see postfixSince in the tests).
var builtinDefaults = func() map[string]string {
	d := map[string]string{
		// Postfix 3.11 reads default_cache_db_type for the caches that
		// were btree: before; upstream's default is btree, Debian's
		// build (3.11.7-1, which also sets default_database_type to
		// cdb) says lmdb. A cache named "${default_cache_db_type}:..."
		// is our own file all the same. The non-Berkeley-DB migration
		// (also 3.11) redirects hash: to the first and btree: to the
		// second type.
		paramDBType:                      "hash",
		paramCacheDBType:                 "lmdb",
		paramNBDBLevel:                   nbdbDisable,
		paramNBDBCustom:                  "",
		"non_bdb_migration_log_redirect": "yes",

		"tls_random_source":             "dev:/dev/urandom",
		"tls_random_bytes":              "32",
		"tls_random_exchange_name":      "${data_directory}/prng_exch",
		"tls_random_prng_update_period": "3600s",
		"tls_random_reseed_period":      "3600s",

		"data_directory":     "/var/lib/postfix",
		"queue_directory":    "/var/spool/postfix",
		ParamConfigDirectory: DefaultConfigDir,
		"daemon_directory":   "/usr/lib/postfix/sbin",
		"command_directory":  "/usr/sbin",
		"meta_directory":     "/etc/postfix",
		"shlib_directory":    "/usr/lib/postfix",
		"mail_owner":         "postfix",
		"mail_name":          "Postfix",

		"daemon_timeout": "18000s",
		"ipc_timeout":    "3600s",

		"syslog_facility": "mail",
		// An expression since Postfix 3.0: the instance name if there is one.
		"syslog_name":         "${multi_instance_name?{$multi_instance_name}:{postfix}}",
		"multi_instance_name": "",
		"maillog_file":        "",

		ParamProcessName: "tlsmgr",
		ParamServiceName: "tlsmgr",

		"tlsmgr_max_attribute_size":     "65536",
		"tlsmgr_max_request_size":       "262144",
		"tlsmgr_client_limit":           "1000",
		"tlsmgr_ticket_key_persistence": "no",
		"tlsmgr_ticket_key_database":    "",
		"tlsmgr_metrics_address":        "",
		"tlsmgr_protocol_announcement":  "auto",
	}
	for _, t := range CacheTypes {
		d[t+"_tls_session_cache_database"] = ""
		d[t+"_tls_session_cache_timeout"] = "3600s"
		d[t+"_tls_loglevel"] = "0"
		d[t+"_tls_session_cache_max_entries"] = "100000"
		d[t+"_tls_session_cache_max_bytes"] = "128m"
	}
	return d
}()

// newDefaults returns the defaults for one Config: the built-in ones,
// this process's id, then extra (which wins).
func newDefaults(extra map[string]string) map[string]string {
	d := maps.Clone(builtinDefaults)
	d[ParamProcessID] = strconv.Itoa(os.Getpid())
	maps.Copy(d, extra)
	return d
}

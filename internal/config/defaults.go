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

// builtinDefaults are the table's defaults: Postfix 3.7's compiled-in
// ones as Debian builds them (postconf -d), for the parameters tlsmgr
// reads and the few that those commonly reference, plus our own. A
// parameter that Postfix added later has the default of the first Debian
// build that has it (Param.Since).
var builtinDefaults = func() map[string]string {
	d := make(map[string]string, len(table))
	for _, pm := range table {
		if !pm.NoDefault {
			d[pm.Name] = pm.Default
		}
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

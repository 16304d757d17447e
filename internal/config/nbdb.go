package config

import (
	"fmt"
	"strings"
)

// The non-Berkeley-DB migration of Postfix 3.11 (NON_BERKELEYDB_README):
// from enable-redirect on, every Postfix program opens a hash: table as
// $default_database_type and a btree: table as $default_cache_db_type,
// or as non_bdb_custom_mapping says, tlsmgr's session caches included.
const (
	paramNBDBLevel   = "non_bdb_migration_level"
	paramNBDBCustom  = "non_bdb_custom_mapping"
	paramDBType      = "default_database_type"
	paramCacheDBType = "default_cache_db_type"

	nbdbDisable  = "disable"
	nbdbRedirect = "enable-redirect"
	nbdbReindex  = "enable-reindex" // also asks nbdb_reindexd(8) to build read-only tables; not caches
)

// DatabaseTypeParams are the parameters that decide, with a cache's
// *_tls_session_cache_database, which type its database is opened as
// (CacheParams.DBType).
var DatabaseTypeParams = []string{paramNBDBLevel, paramNBDBCustom, paramDBType, paramCacheDBType}

// migration resolves the database of each enabled cache within one
// Params call.
type migration struct {
	r          *paramReader
	level      string
	custom     *customMapping // read on first use
	unreadTold bool           // the warning that custom is not read is out
}

// resolve sets cp's Database, DBType, DBPath and RedirectedFrom from the
// database as configured, the way Postfix's tlsmgr opens it. It returns
// the warnings to log.
func (m *migration) resolve(cp *CacheParams, param string) []string {
	r := m.r
	db := cp.Database
	if !strings.Contains(db, ":") {
		// tlsmgr passes the name through data_redirect_map(), which
		// gives a bare name the default table type.
		db = r.nonEmpty(paramDBType) + ":" + db
	}
	typ, path, _ := strings.Cut(db, ":")
	if r.err == nil && (typ == "" || path == "") {
		r.fail(&ValueError{Param: param, Value: cp.Database, Reason: `expected "type:name"`})
	}
	if r.err != nil {
		return nil
	}
	cp.Database, cp.DBType, cp.DBPath = db, typ, path
	if m.level == nbdbDisable || !isLegacyType(typ) {
		return nil
	}
	to, why := m.target(typ, path)
	if r.err != nil {
		return nil
	}
	var warnings []string
	if m.custom.unread && !m.unreadTold {
		m.unreadTold = true
		warnings = append(warnings, fmt.Sprintf("%s = %s: this daemon reads only inline: and static: tables; "+
			"its TLS caches take the default mapping", paramNBDBCustom, m.custom.spec))
	}
	if why != "" {
		// Postfix opens a table that fails every request instead (or
		// exits, with daemon_table_open_error_is_fatal = yes); we keep
		// the cache, which is our own file whatever its type.
		return append(warnings, fmt.Sprintf("non-Berkeley-DB type mapping lookup error for '%s': %s; the %s cache is kept as %s",
			db, why, cp.Name, db))
	}
	cp.DBType, cp.RedirectedFrom = to, typ
	return warnings
}

func isLegacyType(typ string) bool { return typ == "hash" || typ == "btree" }

// target is the type that Postfix's nbdb_map_leg_type() maps a legacy
// type to, or why there is none.
func (m *migration) target(typ, path string) (to, why string) {
	if m.custom == nil {
		m.custom = newCustomMapping(m.r.str(paramNBDBCustom))
	}
	to, found, why := m.custom.lookup(typ + ":" + path)
	if !found && why == "" {
		to, found, why = m.custom.lookup(typ)
	}
	if why != "" {
		return "", why
	}
	if !found {
		if typ == "hash" {
			to = m.r.nonEmpty(paramDBType)
		} else {
			to = m.r.nonEmpty(paramCacheDBType)
		}
	}
	switch {
	case !isAlnum(to):
		return "", fmt.Sprintf("bad non-legacy database type syntax: '%s'", to)
	case isLegacyType(to):
		return "", fmt.Sprintf("mapping from '%s' to legacy type '%s'", typ, to)
	}
	return to, ""
}

// isAlnum is Postfix's allalnum(): ASCII letters and digits, at least one.
func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnumByte(s[i]) {
			return false
		}
	}
	return s != ""
}

// customMapping is non_bdb_custom_mapping, a lookup table from "type" or
// "type:name" to a type. We read the table types that live in main.cf
// itself, inline: and static:; for any other the default mapping stands.
type customMapping struct {
	spec   string
	all    string            // static: the one result
	table  map[string]string // inline:, keys in lower case
	err    string            // every lookup fails with this, as in Postfix
	unread bool              // a table type we do not read: nothing is found
}

func newCustomMapping(spec string) *customMapping {
	m := &customMapping{spec: spec}
	typ, name, ok := strings.Cut(spec, ":")
	switch {
	case spec == "":
	case !ok || typ == "" || name == "":
		m.err = fmt.Sprintf(`open dictionary: expecting "type:name" form instead of "%s"`, spec)
	case isLegacyType(typ):
		m.err = fmt.Sprintf("%s must not use legacy type: '%s'", paramNBDBCustom, typ)
	case typ == "static":
		m.all = name
		if strings.HasPrefix(name, "{") {
			inner, rest, ok := braced(name)
			if !ok || rest != "" {
				m.err = fmt.Sprintf("bad static:name syntax: %q", name)
			}
			m.all = trimSpace(inner)
		}
	case typ == "inline":
		m.table, m.err = parseInline(name)
	default:
		m.unread = true
	}
	return m
}

// lookup returns the result for key, whether there is one, and why the
// lookup failed.
func (m *customMapping) lookup(key string) (to string, found bool, why string) {
	switch {
	case m.err != "":
		return "", false, fmt.Sprintf("%s lookup error for '%s': %s", m.spec, key, m.err)
	case m.table != nil:
		// Postfix opens the mapping with DICT_FLAG_FOLD_FIX.
		to, found = m.table[strings.ToLower(key)]
		return to, found, ""
	case strings.HasPrefix(m.spec, "static:"):
		return m.all, true, ""
	}
	return "", false, ""
}

// parseInline reads the name of an inline: table, "{key=value, ...}",
// where an element may itself be braced ("{ key = value }") to hold
// white space or commas.
func parseInline(name string) (map[string]string, string) {
	bad := fmt.Sprintf(`bad syntax: "inline:%s"; need "inline:{name=value...}"`, name)
	body, rest, ok := braced(name)
	if !ok || rest != "" || body == "" {
		return nil, bad
	}
	table := map[string]string{}
	for _, item := range splitBraced(body) {
		if strings.HasPrefix(item, "{") {
			inner, rest, ok := braced(item)
			if !ok || rest != "" {
				return nil, bad
			}
			item = trimSpace(inner)
		}
		key, value, ok := strings.Cut(item, "=")
		key, value = trimSpace(key), trimSpace(value)
		if !ok || key == "" {
			return nil, fmt.Sprintf(`missing '=' or name in %q: "inline:%s"`, item, name)
		}
		table[strings.ToLower(key)] = value
	}
	if len(table) == 0 {
		return nil, bad
	}
	return table, ""
}

// braced takes s starting with '{' and returns what is inside the
// matching '}' and what follows it.
func braced(s string) (inner, rest string, ok bool) {
	level := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			level++
		case '}':
			if level--; level == 0 {
				return s[1:i], s[i+1:], true
			}
		}
	}
	return "", "", false
}

// splitBraced splits s at commas and white space outside braces.
func splitBraced(s string) []string {
	var items []string
	level, start := 0, -1
	for i := 0; i <= len(s); i++ {
		sep := i == len(s) || level == 0 && (s[i] == ',' || IsSpace(s[i]))
		if sep {
			if start >= 0 {
				items = append(items, s[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
		switch s[i] {
		case '{':
			level++
		case '}':
			level--
		}
	}
	return items
}

package config

import (
	"errors"
	"strings"
	"testing"
)

// cacheTypes is what Params makes of each cache: Database, DBType,
// RedirectedFrom.
func cacheTypes(p *Params) [3][3]string {
	var got [3][3]string
	for i, cp := range p.Caches {
		got[i] = [3]string{cp.Database, cp.DBType, cp.RedirectedFrom}
	}
	return got
}

func TestCacheDBTypeDefault(t *testing.T) {
	// The form of Postfix 3.11's own defaults for its other caches.
	c := mustLoad(t, "smtpd_tls_session_cache_database = ${default_cache_db_type}:${data_directory}/smtpd_scache\n"+
		"smtp_tls_session_cache_database = $default_cache_db_type:/s/smtp_scache\n")
	p := mustParams(t, c)
	want := [3][3]string{
		{"lmdb:/var/lib/postfix/smtpd_scache", "lmdb", ""},
		{"lmdb:/s/smtp_scache", "lmdb", ""},
	}
	if got := cacheTypes(p); got != want || len(p.Warnings) != 0 {
		t.Errorf("got %q, warnings %q; want %q", got, p.Warnings, want)
	}
	c.Set("default_cache_db_type", "btree")
	if got := mustParams(t, c).Caches[0]; got.Database != "btree:/var/lib/postfix/smtpd_scache" || got.DBType != "btree" {
		t.Errorf("default_cache_db_type = btree: %+v", got)
	}
}

func TestNonBDBMigration(t *testing.T) {
	const mainCF = "smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache\n" +
		"smtp_tls_session_cache_database = hash:/s/smtp_scache\n" +
		"lmtp_tls_session_cache_database = lmdb:/l/lmtp_scache\n" +
		"default_database_type = cdb\n"
	noRedirect := [3][3]string{
		{"btree:/var/lib/postfix/smtpd_scache", "btree", ""},
		{"hash:/s/smtp_scache", "hash", ""},
		{"lmdb:/l/lmtp_scache", "lmdb", ""},
	}
	redirected := [3][3]string{
		{"btree:/var/lib/postfix/smtpd_scache", "lmdb", "btree"},
		{"hash:/s/smtp_scache", "cdb", "hash"},
		{"lmdb:/l/lmtp_scache", "lmdb", ""},
	}
	tests := []struct {
		overrides []string
		want      [3][3]string
		warnings  []string // substrings, one per warning
	}{
		{nil, noRedirect, nil},
		{[]string{"non_bdb_migration_level=disable"}, noRedirect, nil},
		{[]string{"non_bdb_migration_level=enable-redirect"}, redirected, nil},
		{[]string{"non_bdb_migration_level=enable-reindex"}, redirected, nil},
		// The custom mapping wins, type:name before type.
		{[]string{"non_bdb_migration_level=enable-redirect",
			"non_bdb_custom_mapping=inline:{ btree:/var/lib/postfix/smtpd_scache=sdbm, {hash = dbm}, btree=cdb }"},
			[3][3]string{
				{"btree:/var/lib/postfix/smtpd_scache", "sdbm", "btree"},
				{"hash:/s/smtp_scache", "dbm", "hash"},
				redirected[2],
			}, nil},
		// Keys match in any case, as Postfix folds them.
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=inline:{BTREE=sdbm}"},
			[3][3]string{
				{"btree:/var/lib/postfix/smtpd_scache", "sdbm", "btree"},
				redirected[1], redirected[2],
			}, nil},
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=static:{ sdbm }"},
			[3][3]string{
				{"btree:/var/lib/postfix/smtpd_scache", "sdbm", "btree"},
				{"hash:/s/smtp_scache", "sdbm", "hash"},
				redirected[2],
			}, nil},
		// A table we cannot read: the default mapping, said once.
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=pcre:/etc/postfix/nbdb.pcre"},
			redirected, []string{"non_bdb_custom_mapping = pcre:/etc/postfix/nbdb.pcre: this daemon reads only inline: and static:"}},
		// Mappings Postfix refuses: each cache is kept as configured.
		{[]string{"non_bdb_migration_level=enable-redirect", "default_database_type=hash", "default_cache_db_type=btree"},
			noRedirect, []string{
				"lookup error for 'btree:/var/lib/postfix/smtpd_scache': mapping from 'btree' to legacy type 'btree'; the smtpd cache is kept as btree:/var/lib/postfix/smtpd_scache",
				"lookup error for 'hash:/s/smtp_scache': mapping from 'hash' to legacy type 'hash'",
			}},
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=inline:{btree=lm-db}"},
			[3][3]string{noRedirect[0], redirected[1], redirected[2]},
			[]string{"bad non-legacy database type syntax: 'lm-db'"}},
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=hash:/etc/postfix/nbdb"},
			noRedirect, []string{"must not use legacy type: 'hash'", "must not use legacy type: 'hash'"}},
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=inline:{btree}"},
			noRedirect, []string{"missing '='", "missing '='"}},
		{[]string{"non_bdb_migration_level=enable-redirect", "non_bdb_custom_mapping=inline:btree=lmdb"},
			noRedirect, []string{"bad syntax", "bad syntax"}},
	}
	for _, tt := range tests {
		p := mustParams(t, mustLoad(t, mainCF, tt.overrides...))
		if got := cacheTypes(p); got != tt.want {
			t.Errorf("%q: got %q; want %q", tt.overrides, got, tt.want)
		}
		if len(p.Warnings) != len(tt.warnings) {
			t.Errorf("%q: warnings %q; want %d", tt.overrides, p.Warnings, len(tt.warnings))
			continue
		}
		for i, w := range tt.warnings {
			if !strings.Contains(p.Warnings[i], w) {
				t.Errorf("%q: warning %q; want it to contain %q", tt.overrides, p.Warnings[i], w)
			}
		}
		for _, cp := range p.Caches {
			if !cp.Enabled {
				t.Errorf("%q: %s cache disabled", tt.overrides, cp.Name)
			}
		}
	}
}

// Only caches that are opened are redirected, as in Postfix.
func TestNonBDBMigrationDisabledCache(t *testing.T) {
	p := mustParams(t, mustLoad(t, "smtp_tls_session_cache_database = btree:/s\nsmtp_tls_session_cache_timeout = 0\n"+
		"non_bdb_migration_level = enable-redirect\ndefault_cache_db_type = btree\n"))
	if got := p.Caches[1]; got.DBType != "btree" || got.RedirectedFrom != "" || len(p.Warnings) != 0 {
		t.Errorf("disabled cache: %+v, warnings %q", got, p.Warnings)
	}
}

// A name without a type is $default_database_type's, and redirected as such.
func TestNonBDBMigrationBareName(t *testing.T) {
	p := mustParams(t, mustLoad(t, "smtpd_tls_session_cache_database = /var/lib/postfix/smtpd_scache\n"+
		"non_bdb_migration_level = enable-redirect\ndefault_database_type = hash\n"+
		"non_bdb_custom_mapping = inline:{hash=lmdb}\n"))
	if got := p.Caches[0]; got.Database != "hash:/var/lib/postfix/smtpd_scache" || got.DBType != "lmdb" ||
		got.RedirectedFrom != "hash" || got.DBPath != "/var/lib/postfix/smtpd_scache" {
		t.Errorf("bare name: %+v", got)
	}
}

// Postfix compares the names as configured, before a type is added or a
// type redirected.
func TestNonBDBMigrationDuplicates(t *testing.T) {
	p, err := mustLoad(t, "smtpd_tls_session_cache_database = /x\nsmtp_tls_session_cache_database = hash:/x\n").Params()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || p.Warnings[0] != "TLS caches smtpd (/x) and smtp (hash:/x) use the same file name" {
		t.Errorf("warnings %q", p.Warnings)
	}
	_, err = mustLoad(t, "smtpd_tls_session_cache_database = /x\nsmtp_tls_session_cache_database = /x\n").Params()
	if err == nil || !strings.Contains(err.Error(), "do not use the same TLS cache file /x for smtpd and smtp") {
		t.Errorf("duplicate bare names: %v", err)
	}
}

func TestNonBDBMigrationParams(t *testing.T) {
	p := mustParams(t, mustLoad(t, "", "non_bdb_migration_log_redirect=NO"))
	if p.LogRedirect {
		t.Error("non_bdb_migration_log_redirect = NO: LogRedirect")
	}
	// Postfix 3.11 exits on these, whatever the caches.
	for _, tt := range []struct{ param, value string }{
		{"non_bdb_migration_level", "enable"},
		{"non_bdb_migration_level", "Enable-Redirect"},
		{"non_bdb_migration_level", ""},
		{"non_bdb_migration_log_redirect", "sometimes"},
	} {
		_, err := mustLoad(t, "", tt.param+"="+tt.value).Params()
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Param != tt.param || ve.Value != tt.value {
			t.Errorf("%s = %q: error %v", tt.param, tt.value, err)
		}
	}
	// Read only when needed, and then not empty (Postfix's minimum
	// length).
	const redirect = "non_bdb_migration_level = enable-redirect\n"
	for _, tt := range []struct{ param, mainCF string }{
		{"default_cache_db_type", "smtpd_tls_session_cache_database = btree:/x\n" + redirect},
		{"default_database_type", "smtpd_tls_session_cache_database = hash:/x\n" + redirect},
		{"default_database_type", "smtpd_tls_session_cache_database = /x\n"},
	} {
		_, err := mustLoad(t, tt.mainCF, tt.param+"=").Params()
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Param != tt.param {
			t.Errorf("%s empty, for %q: error %v", tt.param, tt.mainCF, err)
		}
		if _, err := mustLoad(t, "", tt.param+"=").Params(); err != nil {
			t.Errorf("%s empty, not read: %v", tt.param, err)
		}
	}
}

package config

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustParams(t *testing.T, c *Config) *Params {
	t.Helper()
	p, err := c.Params()
	if err != nil {
		t.Fatalf("Params: %v", err)
	}
	return p
}

func TestDefaultParams(t *testing.T) {
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := mustParams(t, c)
	for i, name := range []string{"smtpd", "smtp", "lmtp"} {
		want := CacheParams{Name: name, Timeout: time.Hour, MaxEntries: 100000, MaxBytes: 128 << 20, TLSLogLevel: "0"}
		if p.Caches[i] != want {
			t.Errorf("Caches[%d] = %+v, want %+v", i, p.Caches[i], want)
		}
	}
	want := Params{
		Caches:               p.Caches,
		RandomSource:         "dev:/dev/urandom",
		RandomBytes:          32,
		ExchangeName:         "/var/lib/postfix/prng_exch",
		PRNGUpdatePeriod:     time.Hour,
		ReseedPeriod:         time.Hour,
		DataDirectory:        "/var/lib/postfix",
		QueueDirectory:       "/var/spool/postfix",
		ConfigDirectory:      "/etc/postfix",
		DaemonDirectory:      "/usr/lib/postfix/sbin",
		CommandDirectory:     "/usr/sbin",
		ProtocolAnnouncement: "auto",
		NBDBLevel:            "disable",
		DefaultDBType:        "hash",
		CacheDBType:          "lmdb",
		LogRedirect:          true,
		MailOwner:            "postfix",
		DaemonTimeout:        18000 * time.Second,
		IPCTimeout:           3600 * time.Second,
		SyslogFacility:       "mail",
		SyslogName:           "postfix",
		MaillogFile:          "",
		MaxAttributeSize:     65536,
		MaxRequestSize:       262144,
		ClientLimit:          1000,
		TicketKeyPersistence: false,
	}
	if p.Warnings != nil {
		t.Errorf("Warnings = %q", p.Warnings)
	}
	p.Warnings = nil
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("Params =\n%+v\nwant\n%+v", *p, want)
	}
}

func TestSyslogNameFollowsInstance(t *testing.T) {
	c := mustLoad(t, "multi_instance_name = postfix-out\n")
	if p := mustParams(t, c); p.SyslogName != "postfix-out" {
		t.Errorf("SyslogName = %q", p.SyslogName)
	}
}

func TestSessionTimeoutSanitising(t *testing.T) {
	tests := []struct {
		value   string
		want    time.Duration
		enabled bool
	}{
		{"0", 0, false},
		{"0s", 0, false},
		{"1", 120 * time.Second, true},
		{"1s", 120 * time.Second, true},
		{"119", 120 * time.Second, true},
		{"2m", 120 * time.Second, true},
		{"121", 121 * time.Second, true},
		{"3600s", time.Hour, true},
		{"100d", 8640000 * time.Second, true},
		{"8640000", 8640000 * time.Second, true},
	}
	for _, tt := range tests {
		c := mustLoad(t, "smtpd_tls_session_cache_database = btree:/x/smtpd_scache\n",
			"smtpd_tls_session_cache_timeout="+tt.value)
		p := mustParams(t, c)
		if got := p.Caches[0]; got.Timeout != tt.want || got.Enabled != tt.enabled {
			t.Errorf("timeout %q: got %v enabled=%v; want %v enabled=%v", tt.value, got.Timeout, got.Enabled, tt.want, tt.enabled)
		}
	}
	// Postfix 3.7 refuses to start above the maximum; it does not clamp.
	for _, value := range []string{"8640001", "101d", "-1", "-5m", "1x"} {
		c := mustLoad(t, "", "lmtp_tls_session_cache_timeout="+value)
		_, err := c.Params()
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Param != "lmtp_tls_session_cache_timeout" || ve.Value != value {
			t.Errorf("timeout %q: error %v", value, err)
		}
	}
}

func TestCacheDatabase(t *testing.T) {
	c := mustLoad(t, `
smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache
smtp_tls_session_cache_database = proxy:btree:/var/lib/postfix/smtp_scache
lmtp_tls_session_cache_database = lmdb:/var/lib/postfix/lmtp_scache
lmtp_tls_session_cache_timeout = 0
data_directory = /data
`)
	p := mustParams(t, c)
	want := []struct {
		db, typ, path string
		enabled       bool
	}{
		{"btree:/data/smtpd_scache", "btree", "/data/smtpd_scache", true},
		{"proxy:btree:/var/lib/postfix/smtp_scache", "proxy", "btree:/var/lib/postfix/smtp_scache", true},
		{"lmdb:/var/lib/postfix/lmtp_scache", "lmdb", "/var/lib/postfix/lmtp_scache", false},
	}
	for i, w := range want {
		got := p.Caches[i]
		if got.Database != w.db || got.DBType != w.typ || got.DBPath != w.path || got.Enabled != w.enabled {
			t.Errorf("Caches[%d] = %+v; want %+v", i, got, w)
		}
	}

	// Without a type: tlsmgr's data_redirect_map() gives the name
	// $default_database_type.
	c = mustLoad(t, "smtpd_tls_session_cache_database = $data_directory/smtpd_scache\n"+
		"smtp_tls_session_cache_database = /s/smtp_scache\ndefault_database_type = lmdb\n",
		"lmtp_tls_session_cache_database=/l/lmtp_scache", "lmtp_tls_session_cache_timeout=0")
	p = mustParams(t, c)
	for i, w := range []struct{ db, typ, path string }{
		{"lmdb:/var/lib/postfix/smtpd_scache", "lmdb", "/var/lib/postfix/smtpd_scache"},
		{"lmdb:/s/smtp_scache", "lmdb", "/s/smtp_scache"},
		{"/l/lmtp_scache", "", ""}, // disabled: not opened
	} {
		if got := p.Caches[i]; got.Database != w.db || got.DBType != w.typ || got.DBPath != w.path {
			t.Errorf("without a type: Caches[%d] = %+v; want %+v", i, got, w)
		}
	}
	if p := mustParams(t, mustLoad(t, "smtpd_tls_session_cache_database = /x\n")); p.Caches[0].Database != "hash:/x" {
		t.Errorf("without a type, default: %+v", p.Caches[0])
	}

	// An empty type or name: refused for an enabled cache, as Postfix's
	// map open would, ignored for a disabled one.
	for _, db := range []string{"btree:", ":/x"} {
		c = mustLoad(t, "", "smtpd_tls_session_cache_database="+db)
		_, err := c.Params()
		if err == nil || !strings.Contains(err.Error(), "smtpd_tls_session_cache_database") ||
			!strings.Contains(err.Error(), strconv.Quote(db)) {
			t.Errorf("database %q: error %v", db, err)
		}
		c.Set("smtpd_tls_session_cache_timeout", "0")
		if _, err := c.Params(); err != nil {
			t.Errorf("database %q, disabled: %v", db, err)
		}
	}
}

func TestDuplicateCacheDatabase(t *testing.T) {
	const shared = "smtpd_tls_session_cache_database = btree:/var/lib/postfix/scache\n" +
		"smtp_tls_session_cache_database = btree:${data_directory}/scache\n"
	_, err := mustLoad(t, shared).Params()
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Param != "smtp_tls_session_cache_database" ||
		!strings.Contains(err.Error(), "do not use the same TLS cache file btree:/var/lib/postfix/scache for smtpd and smtp") {
		t.Errorf("duplicate database: %v", err)
	}
	// Only enabled caches count.
	if _, err := mustLoad(t, shared, "smtp_tls_session_cache_timeout=0").Params(); err != nil {
		t.Errorf("duplicate of a disabled cache: %v", err)
	}
	// lmtp against smtpd, with smtp in between and different.
	_, err = mustLoad(t, "smtpd_tls_session_cache_database = hash:/a\n"+
		"smtp_tls_session_cache_database = hash:/b\n"+
		"lmtp_tls_session_cache_database = hash:/a\n").Params()
	if err == nil || !strings.Contains(err.Error(), "for smtpd and lmtp") {
		t.Errorf("smtpd/lmtp duplicate: %v", err)
	}
	// Postfix compares the strings exactly: another type is another
	// database, though it names the same file. We warn.
	p, err := mustLoad(t, "smtpd_tls_session_cache_database = btree:/a\n"+
		"smtp_tls_session_cache_database = hash:/a\n").Params()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "same file name") {
		t.Errorf("Warnings = %q", p.Warnings)
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		value    string
		cache    bool
		level    int
		warnings int
	}{
		{"0", false, 0, 0},
		{"", false, 0, 0},
		{"1", false, 1, 0},
		{"2", true, 2, 0},
		{"3", true, 3, 0},
		{"4", true, 4, 0},
		{"9", true, 9, 0},
		{"none", false, 0, 0},
		{"routine", false, 0, 0},
		{"debug", true, 0, 0},
		{"ssl-expert", true, 0, 0},
		{"cache", true, 0, 0},
		{"CACHE", true, 0, 0},
		{"1, cache", true, 1, 0},
		{"routine,summary peercert", false, 0, 0},
		{"routine verbose dane ssl-debug", false, 0, 0},
		// Postfix 3.12's protocol trace, for smtp(8) and smtpd(8) only.
		{"trace", false, 0, 0},
		{"1,trace", false, 1, 0},
		{"2, TRACE", true, 2, 0},
		// Unknown words: Postfix warns and logs nothing extra.
		{"10", false, 0, 1},
		{"cache, bogus", false, 0, 1},
		{"-1", false, 0, 1},
	}
	for _, tt := range tests {
		c := mustLoad(t, "smtp_tls_session_cache_database = btree:/s\n", "smtp_tls_loglevel="+tt.value)
		p := mustParams(t, c)
		got := p.Caches[1]
		if got.LogCache != tt.cache || got.LogLevel != tt.level || len(p.Warnings) != tt.warnings {
			t.Errorf("loglevel %q: LogCache=%v LogLevel=%d warnings=%q; want %v %d %d",
				tt.value, got.LogCache, got.LogLevel, p.Warnings, tt.cache, tt.level, tt.warnings)
		}
		if tt.warnings > 0 && !strings.Contains(p.Warnings[0], "smtp_tls_loglevel") {
			t.Errorf("warning %q does not name the parameter", p.Warnings[0])
		}
	}
	// tlsmgr reads the level only for caches it opens.
	p := mustParams(t, mustLoad(t, "", "smtp_tls_loglevel=bogus"))
	if len(p.Warnings) != 0 {
		t.Errorf("disabled cache: warnings %q", p.Warnings)
	}
}

func TestRandomParams(t *testing.T) {
	c := mustLoad(t, "tls_random_source = egd:/var/run/egd-pool\ntls_random_bytes = 255\n"+
		"tls_random_exchange_name =\ntls_random_prng_update_period = 1s\n"+
		"tls_random_reseed_period = 24854d\n")
	p := mustParams(t, c)
	if p.RandomSource != "egd:/var/run/egd-pool" || p.RandomBytes != 255 || p.ExchangeName != "" {
		t.Errorf("got %q %d %q", p.RandomSource, p.RandomBytes, p.ExchangeName)
	}
	if p.PRNGUpdatePeriod != time.Second {
		t.Errorf("PRNGUpdatePeriod = %v", p.PRNGUpdatePeriod)
	}
	// tlsmgr clamps long periods to INT_MAX/UCHAR_MAX seconds.
	if p.ReseedPeriod != 8421504*time.Second {
		t.Errorf("ReseedPeriod = %v", p.ReseedPeriod)
	}
}

func TestOwnParams(t *testing.T) {
	c := mustLoad(t, "smtpd_tls_session_cache_max_entries = 5\nsmtp_tls_session_cache_max_bytes = 1g\n"+
		"lmtp_tls_session_cache_max_bytes = 4096\ntlsmgr_max_attribute_size = 2k\n"+
		"tlsmgr_max_request_size = 2048\ntlsmgr_client_limit = 7\ntlsmgr_ticket_key_persistence = Yes\n"+
		"tlsmgr_protocol_announcement = no\n")
	p := mustParams(t, c)
	if p.ProtocolAnnouncement != "no" {
		t.Errorf("tlsmgr_protocol_announcement: %q", p.ProtocolAnnouncement)
	}
	if p.Caches[0].MaxEntries != 5 || p.Caches[1].MaxBytes != 1<<30 || p.Caches[2].MaxBytes != 4096 {
		t.Errorf("caches %+v", p.Caches)
	}
	if p.MaxAttributeSize != 2048 || p.MaxRequestSize != 2048 || p.ClientLimit != 7 || !p.TicketKeyPersistence {
		t.Errorf("got %d %d %d %v", p.MaxAttributeSize, p.MaxRequestSize, p.ClientLimit, p.TicketKeyPersistence)
	}
}

// Every malformed or out-of-range value is an error that names the
// parameter and quotes the value.
func TestMalformedValues(t *testing.T) {
	tests := []struct{ param, value string }{
		{"smtpd_tls_session_cache_timeout", "later"},
		{"smtp_tls_session_cache_timeout", "1.5h"},
		{"smtpd_tls_session_cache_max_entries", "0"},
		{"smtp_tls_session_cache_max_entries", "-3"},
		{"lmtp_tls_session_cache_max_entries", "many"},
		{"lmtp_tls_session_cache_max_entries", "2147483648"},
		{"smtpd_tls_session_cache_max_bytes", "0"},
		{"smtp_tls_session_cache_max_bytes", "12x"},
		{"lmtp_tls_session_cache_max_bytes", "-1"},
		{"tls_random_bytes", "0"},
		{"tls_random_bytes", "-1"},
		{"tls_random_bytes", "32 bytes"},
		{"tls_random_prng_update_period", "0"},
		{"tls_random_prng_update_period", "1y"},
		{"tls_random_reseed_period", "0s"},
		{"data_directory", ""},
		{"queue_directory", ""},
		{"daemon_directory", ""},
		{"mail_owner", ""},
		{"daemon_timeout", "0"},
		{"daemon_timeout", "forever"},
		{"ipc_timeout", "0"},
		{"syslog_facility", "LOCAL0"},
		{"syslog_facility", "local8"},
		{"syslog_facility", ""},
		{"syslog_name", ""},
		{"tlsmgr_max_attribute_size", "1023"},
		{"tlsmgr_max_attribute_size", "big"},
		{"tlsmgr_max_request_size", "1000"},
		{"tlsmgr_max_request_size", "32768"}, // below the attribute size
		{"tlsmgr_client_limit", "0"},
		{"tlsmgr_client_limit", "lots"},
		{"tlsmgr_ticket_key_persistence", "true"},
		{"tlsmgr_ticket_key_database", "btree:/var/lib/postfix/keys"},
		{"tlsmgr_ticket_key_database", "redis:relative.cf"},
		{"smtpd_tls_session_cache_database", "${broken"},
		{"tlsmgr_protocol_announcement", "maybe"},
		{"tlsmgr_protocol_announcement", "Yes"},
		{"tlsmgr_protocol_announcement", ""},
	}
	for _, tt := range tests {
		c := mustLoad(t, "", tt.param+"="+tt.value)
		_, err := c.Params()
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Param != tt.param {
			t.Errorf("%s = %q: error %v", tt.param, tt.value, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "parameter "+tt.param) || !strings.Contains(msg, strconv.Quote(tt.value)) {
			t.Errorf("%s = %q: message %q", tt.param, tt.value, msg)
		}
	}
}

func TestOverridePrecedenceInParams(t *testing.T) {
	dir := writeMainCF(t, "smtpd_tls_session_cache_database = btree:/main\nipc_timeout = 1h\n")
	c, err := Load(dir, map[string]string{"ipc_timeout": "5s", "tlsmgr_client_limit": "3"},
		[]string{"smtpd_tls_session_cache_database=btree:/override"})
	if err != nil {
		t.Fatal(err)
	}
	c.Set("process_name", "tlsmgr-test")
	p := mustParams(t, c)
	processName, _ := c.String(ParamProcessName)
	if p.Caches[0].Database != "btree:/override" || p.IPCTimeout != time.Hour ||
		p.ClientLimit != 3 || processName != "tlsmgr-test" || p.ConfigDirectory != dir {
		t.Errorf("got %q %v %d %q %q", p.Caches[0].Database, p.IPCTimeout, p.ClientLimit, processName, p.ConfigDirectory)
	}
}

func TestTicketKeyDatabase(t *testing.T) {
	c := mustLoad(t, "", "tlsmgr_ticket_key_database=redis:/etc/postfix/tlsmgr-redis.cf")
	p, err := c.Params()
	if err != nil || p.TicketKeyDatabase != "redis:/etc/postfix/tlsmgr-redis.cf" {
		t.Fatalf("got %q, %v", p.TicketKeyDatabase, err)
	}
	c = mustLoad(t, "", "tlsmgr_ticket_key_database=redis:/x.cf", "tlsmgr_ticket_key_persistence=yes")
	var ve *ValueError
	if _, err := c.Params(); !errors.As(err, &ve) || ve.Param != "tlsmgr_ticket_key_persistence" {
		t.Fatalf("a shared ring with persistence: %v", err)
	}
}

// One Redis settings file may serve every cache: entries are kept apart by
// cache name there, unlike two caches in one file.
func TestSharedRedisSettings(t *testing.T) {
	c := mustLoad(t, "", "smtpd_tls_session_cache_database=redis:/etc/postfix/r.cf",
		"smtp_tls_session_cache_database=redis:/etc/postfix/r.cf")
	p, err := c.Params()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %q", p.Warnings)
	}
}

package config

import (
	"slices"
	"strings"
	"testing"
)

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "abc", 0},
		{"abc", "abd", 1},
		{"abc", "ab", 1},
		{"abc", "acb", 1}, // a transposition
		{"smtpd_tls_session_cache_max_entires", "smtpd_tls_session_cache_max_entries", 1},
		{"smtpd_tls_session_cache_max_entrys", "smtpd_tls_session_cache_max_entries", 2},
		{"kitten", "sitting", 3},
		{"short", "a much longer name", 3}, // the limit
	} {
		if got := editDistance(c.a, c.b, 3); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := editDistance(c.b, c.a, 3); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.b, c.a, got, c.want)
		}
	}
}

// A misspelt parameter of ours is named with the one meant; Postfix's own
// parameters, ours spelt right and unrelated names are left alone.
func TestLookalikeParameters(t *testing.T) {
	c := mustLoad(t, "smtpd_tls_session_cache_max_entires = 5\n"+
		"lmtp_tls_sesion_cache_max_bytes = 1m\n"+
		"tlsmgr_metric_address = 127.0.0.1:9100\n"+
		"tlsmgr_cache_size = 1\n"+
		"tlsmgr_service_name = tlsmgr\n"+ // Postfix's, read by its clients
		"smtpd_tls_session_cache_max_entries = 7\n"+
		"smtp_tls_session_cache_timeout = 1h\n"+
		"myhostname = mx.example.org\n"+
		"my_own_setting = yes\n")
	p := mustParams(t, c)
	var got []string
	for _, w := range p.Warnings {
		if strings.HasPrefix(w, "unknown parameter") {
			got = append(got, w)
		}
	}
	want := []string{
		"unknown parameter lmtp_tls_sesion_cache_max_bytes is ignored; did you mean lmtp_tls_session_cache_max_bytes?",
		"unknown parameter smtpd_tls_session_cache_max_entires is ignored; did you mean smtpd_tls_session_cache_max_entries?",
		"unknown parameter tlsmgr_cache_size is ignored: tlsmgr-go(8) lists its parameters",
		"unknown parameter tlsmgr_metric_address is ignored; did you mean tlsmgr_metrics_address?",
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.Caches[0].MaxEntries != 7 {
		t.Errorf("smtpd max entries %d", p.Caches[0].MaxEntries)
	}
}

func TestOwnParamsList(t *testing.T) {
	own := OwnParams()
	for _, name := range []string{"tlsmgr_metrics_address", "tlsmgr_protocol_announcement", "smtpd_tls_session_cache_max_entries", "lmtp_tls_session_cache_max_bytes"} {
		if !slices.Contains(own, name) {
			t.Errorf("OwnParams lacks %s", name)
		}
	}
	for _, name := range []string{"smtpd_tls_session_cache_database", "tls_random_source", "process_name"} {
		if slices.Contains(own, name) {
			t.Errorf("OwnParams has Postfix's %s", name)
		}
	}
}

// The daemon's own parameters that main.cf sets are declared to postconf
// by the tlsmgr service's -o smtpd_restriction_classes; Undeclared names
// the others, which postconf reports as unused.
func TestUndeclared(t *testing.T) {
	mainCF := "smtpd_tls_session_cache_max_entries = 5\ntlsmgr_metrics_address = 127.0.0.1:9\nmyhostname = mx.example.org\n"
	for _, c := range []struct {
		overrides []string
		want      []string
	}{
		{nil, []string{"smtpd_tls_session_cache_max_entries", "tlsmgr_metrics_address"}},
		{[]string{"smtpd_restriction_classes=tlsmgr_metrics_address"}, []string{"smtpd_tls_session_cache_max_entries"}},
		{[]string{"smtpd_restriction_classes=smtpd_tls_session_cache_max_entries,tlsmgr_metrics_address"}, nil},
		{[]string{"smtpd_restriction_classes=smtpd_tls_session_cache_max_entries tlsmgr_metrics_address"}, nil},
	} {
		cfg, err := Load(writeMainCF(t, mainCF), nil, c.overrides)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Undeclared(); !slices.Equal(got, c.want) {
			t.Errorf("-o %v: Undeclared() = %v, want %v", c.overrides, got, c.want)
		}
	}
}

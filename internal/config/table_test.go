package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTableIsWellFormed: every parameter has a kind and a reload class
// that fit together, a field of the type its kind reads into, and limits
// only where its kind has them.
func TestTableIsWellFormed(t *testing.T) {
	if len(table) < 40 {
		t.Fatalf("only %d parameters in the table", len(table))
	}
	for _, pm := range table {
		if pm.Kind < KindString || pm.Kind > KindReference || pm.Reload < ReloadLive || pm.Reload > ReloadNone {
			t.Errorf("%s: kind %v, reload %v", pm.Name, pm.Kind, pm.Reload)
			continue
		}
		unread := pm.Kind == KindReadOnly || pm.Kind == KindReference
		if unread != (pm.field == nil) {
			t.Errorf("%s: a %v parameter with field %v", pm.Name, pm.Kind, pm.field != nil)
			continue
		}
		if unread && pm.Reload != ReloadNone {
			t.Errorf("%s: a %v parameter cannot be %v", pm.Name, pm.Kind, pm.Reload)
		}
		if pm.NoDefault && pm.Default != "" {
			t.Errorf("%s: NoDefault and a default %q", pm.Name, pm.Default)
		}
		if (pm.Floor != 0 || pm.Ceil != 0) && pm.Kind != KindTime {
			t.Errorf("%s: Floor or Ceil for a %v parameter", pm.Name, pm.Kind)
		}
		if (pm.check != nil || pm.lenient) && pm.Kind != KindString {
			t.Errorf("%s: check or lenient for a %v parameter", pm.Name, pm.Kind)
		}
		if pm.Max != 0 && pm.Max < pm.Min {
			t.Errorf("%s: Max %d below Min %d", pm.Name, pm.Max, pm.Min)
		}
		if unread {
			continue
		}
		var p Params
		var ok bool
		switch pm.field(&p).(type) {
		case *string:
			ok = pm.Kind == KindString
		case *time.Duration:
			ok = pm.Kind == KindTime
		case *int:
			ok = pm.Kind == KindInt || pm.Kind == KindSize
		case *int64:
			ok = pm.Kind == KindSize
		case *bool:
			ok = pm.Kind == KindBool
		}
		if !ok {
			t.Errorf("%s: a %v parameter with a field of type %T", pm.Name, pm.Kind, pm.field(&p))
		}
	}
	for _, name := range CacheTypes {
		for _, suffix := range []string{"_tls_session_cache_database", "_tls_session_cache_timeout",
			"_tls_session_cache_max_entries", "_tls_session_cache_max_bytes", "_tls_loglevel"} {
			if byName[name+suffix] == nil {
				t.Errorf("no %s%s", name, suffix)
			}
		}
	}
}

// leafFields maps the address of every field of v (a pointer to a
// struct), descending into structs and arrays, to its path: Caches[1].Timeout.
func leafFields(v reflect.Value, path string, out map[uintptr]string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			p := f.Name
			if path != "" {
				p = path + "." + f.Name
			}
			leafFields(v.Field(i), p, out)
		}
	case reflect.Array:
		for i := range v.Len() {
			leafFields(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		out[v.Addr().Pointer()] = path
	}
}

// TestEveryFieldIsAParameter: each field of Params is set by exactly one
// parameter of the table, or is one of derivedFields, which name the
// parameters they come from. So a new field cannot escape the reload,
// which compares every parameter of the table.
func TestEveryFieldIsAParameter(t *testing.T) {
	var p Params
	fields := map[uintptr]string{}
	leafFields(reflect.ValueOf(&p).Elem(), "", fields)
	setBy := map[string]string{}
	for _, pm := range table {
		if pm.field == nil {
			continue
		}
		path, ok := fields[reflect.ValueOf(pm.field(&p)).Pointer()]
		switch {
		case !ok:
			t.Errorf("%s: its field is not a field of Params", pm.Name)
		case setBy[path] != "":
			t.Errorf("%s and %s both set %s", setBy[path], pm.Name, path)
		default:
			setBy[path] = pm.Name
		}
	}
	for _, path := range fields {
		name := path
		if i := strings.IndexByte(path, '.'); i >= 0 {
			name = path[i+1:]
		}
		from, derived := derivedFields[name]
		switch {
		case setBy[path] != "" && derived:
			t.Errorf("%s is set by %s and listed as derived", path, setBy[path])
		case setBy[path] == "" && !derived:
			t.Errorf("Params.%s is no parameter's: give it one in the table (table.go), or list it in derivedFields", path)
		}
		for _, src := range from {
			src = replaceStar(src)
			if byName[src] == nil {
				t.Errorf("derivedFields: %s comes from %s, which is not in the table", name, src)
			}
		}
	}
}

// replaceStar names the smtpd parameter for one written for all cache
// types: *_tls_loglevel is smtpd_tls_loglevel.
func replaceStar(name string) string {
	if rest, ok := strings.CutPrefix(name, "*_"); ok {
		return CacheTypes[0] + "_" + rest
	}
	return name
}

// TestEveryParameterIsRead: Params reads every parameter that has a
// field, with its own error: a reference loop in it fails Params naming
// it; a lenient one is left empty instead.
func TestEveryParameterIsRead(t *testing.T) {
	for _, pm := range table {
		if pm.field == nil {
			continue
		}
		c, err := Load("", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Set(pm.Name, "$"+pm.Name)
		p, err := c.Params()
		var ve *ValueError
		switch {
		case pm.lenient && err != nil:
			t.Errorf("%s: lenient, but %v", pm.Name, err)
		case pm.lenient && pm.Value(p) != "":
			t.Errorf("%s: lenient, and a value that does not expand is read as %q", pm.Name, pm.Value(p))
		case !pm.lenient && !errors.As(err, &ve):
			t.Errorf("%s = $%s: Params says %v", pm.Name, pm.Name, err)
		// Or the error is of one read before it that refers to it, such
		// as tls_random_exchange_name to data_directory.
		case !pm.lenient && ve.Param != pm.Name && !strings.Contains(ve.Error(), "-> "+pm.Name+" -> "+pm.Name):
			t.Errorf("%s = $%s: Params says %v", pm.Name, pm.Name, err)
		}
	}
}

// TestDefaultsReadAsDefaults: each default is a valid value of its
// parameter, read as Value gives it back where the text says so plainly.
func TestDefaultsReadAsDefaults(t *testing.T) {
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Params()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"smtp_tls_session_cache_timeout": "3600s", "tls_random_bytes": "32", "lmtp_tls_session_cache_max_bytes": "134217728",
		"tlsmgr_ticket_key_persistence": "no", "non_bdb_migration_log_redirect": "yes",
		"tls_random_exchange_name": "/var/lib/postfix/prng_exch", "myhostname": "",
	} {
		pm := byName[name]
		if got := pm.Value(p); got != want {
			t.Errorf("%s: Value %q, want %q", name, got, want)
		}
	}
}

// TestChanges: parameters are compared as tlsmgr uses them, in the
// table's order, read-only and referenced ones not at all.
func TestChanges(t *testing.T) {
	read := func(overrides ...string) *Params {
		t.Helper()
		c, err := Load("", nil, overrides)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Params()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := read("smtp_tls_session_cache_timeout=3600", "tls_random_bytes=32", "ipc_timeout=60s",
		"smtpd_tls_session_cache_timeout=60")
	if got := Changes(old, read("smtp_tls_session_cache_timeout=1h", "ipc_timeout=1m", "mail_name=Other",
		"smtpd_tls_session_cache_timeout=100", "process_name=other")); len(got) != 0 {
		t.Errorf("the same values written otherwise: %+v", got)
	}
	got := Changes(old, read("tls_random_bytes=64", "smtp_tls_session_cache_timeout=2h", "ipc_timeout=60",
		"smtpd_tls_session_cache_timeout=1",
		"tlsmgr_ticket_key_persistence=yes", "myhostname=mx.example", "lmtp_tls_loglevel=2"))
	var summary []string
	for _, c := range got {
		summary = append(summary, fmt.Sprintf("%s %s %s->%s", c.Name, c.Reload, c.From, c.To))
	}
	want := []string{
		"smtp_tls_session_cache_timeout live 3600s->7200s",
		"lmtp_tls_loglevel live 0->2",
		"tls_random_bytes restart 32->64",
		"myhostname restart ->mx.example",
		"tlsmgr_ticket_key_persistence restart no->yes",
	}
	if !slices.Equal(summary, want) {
		t.Errorf("Changes:\n%q\nwant\n%q", summary, want)
	}
}

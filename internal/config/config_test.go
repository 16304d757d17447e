package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadMissingMainCF(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir, nil, nil)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "main.cf")) {
		t.Errorf("Load(empty dir) error = %v; want not-exist naming the path", err)
	}
}

func TestLoadWithoutDir(t *testing.T) {
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.String("config_directory"); v != DefaultConfigDir {
		t.Errorf("config_directory = %q", v)
	}
	if v, _ := c.String("process_id"); v != strconv.Itoa(os.Getpid()) {
		t.Errorf("process_id = %q", v)
	}
}

func TestPrecedence(t *testing.T) {
	dir := writeMainCF(t, "a = main\nb = main\nc = main\nqueue_directory = /q\n")
	extra := map[string]string{"a": "extra", "d": "extra", "data_directory": "/extra/data", "z": "extra"}
	c, err := Load(dir, extra, []string{"b=override", "c=o", "f =  spaced  ", "e=", "queue_directory=$data_directory/q"})
	if err != nil {
		t.Fatal(err)
	}
	c.Set("c", "set")
	want := map[string]string{
		"a":                        "main",     // main.cf beats defaults
		"b":                        "override", // -o beats main.cf
		"c":                        "set",      // Set beats -o
		"d":                        "extra",    // extra defaults add names
		"e":                        "",         // -o with an empty value
		"f":                        "spaced",   // -o is trimmed like main.cf
		"data_directory":           "/extra/data",
		"queue_directory":          "/extra/data/q", // references see the final values
		"config_directory":         dir,             // the directory read, as in Postfix
		"tls_random_exchange_name": "/extra/data/prng_exch",
		"mail_owner":               "postfix",
	}
	for name, w := range want {
		if v, ok, err := c.Lookup(name); err != nil || !ok || v != w {
			t.Errorf("%s = %q, %v, %v; want %q", name, v, ok, err, w)
		}
	}
	if v, ok, err := c.Lookup("nowhere"); v != "" || ok || err != nil {
		t.Errorf("Lookup(nowhere) = %q, %v, %v", v, ok, err)
	}
	if v, err := c.String("nowhere"); v != "" || err != nil {
		t.Errorf("String(nowhere) = %q, %v", v, err)
	}

	// main.cf and -o can name config_directory too.
	c, err = Load(dir, nil, []string{"config_directory=/elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.String("config_directory"); v != "/elsewhere" {
		t.Errorf("config_directory = %q", v)
	}
}

func TestOverrideSyntax(t *testing.T) {
	for _, o := range []string{"noequals", "=value", "", "a b=c"} {
		_, err := Load("", nil, []string{o})
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(o)) {
			t.Errorf("-o %q: error %v", o, err)
		}
	}
}

func TestTypedGetters(t *testing.T) {
	c := mustLoad(t, "t = 2h\ni = 42\nb = YES\ns = 4k\nref = ${t}\nempty =\n")
	if d, err := c.Time("t"); err != nil || d != 2*time.Hour {
		t.Errorf("Time(t) = %v, %v", d, err)
	}
	if d, err := c.Time("ref"); err != nil || d != 2*time.Hour {
		t.Errorf("Time(ref) = %v, %v", d, err)
	}
	if n, err := c.Int("i"); err != nil || n != 42 {
		t.Errorf("Int(i) = %v, %v", n, err)
	}
	if b, err := c.Bool("b"); err != nil || !b {
		t.Errorf("Bool(b) = %v, %v", b, err)
	}
	if n, err := c.Size("s"); err != nil || n != 4096 {
		t.Errorf("Size(s) = %v, %v", n, err)
	}
	for _, get := range []func(string) error{
		func(n string) error { _, err := c.Time(n); return err },
		func(n string) error { _, err := c.Int(n); return err },
		func(n string) error { _, err := c.Bool(n); return err },
		func(n string) error { _, err := c.Size(n); return err },
	} {
		if err := get("undefined_here"); !errors.Is(err, ErrUndefined) || !strings.Contains(err.Error(), "undefined_here") {
			t.Errorf("undefined parameter: %v", err)
		}
		var ve *ValueError
		if err := get("empty"); !errors.As(err, &ve) || ve.Param != "empty" {
			t.Errorf("empty value: %v", err)
		}
	}
}

func TestTypedGetterMessages(t *testing.T) {
	c := mustLoad(t, "smtpd_tls_session_cache_timeout = 1x\nn = 12abc\nb = maybe\ns = 12q\nx = $t\nt = 5 m\n")
	tests := []struct {
		get  func() error
		want string
	}{
		{func() error { _, err := c.Time("smtpd_tls_session_cache_timeout"); return err },
			`invalid time value "1x" for parameter smtpd_tls_session_cache_timeout`},
		{func() error { _, err := c.Int("n"); return err }, `invalid numerical value "12abc" for parameter n`},
		{func() error { _, err := c.Bool("b"); return err }, `invalid boolean value "maybe" for parameter b`},
		{func() error { _, err := c.Size("s"); return err }, `invalid size value "12q" for parameter s`},
		// The expanded value is the one reported.
		{func() error { _, err := c.Time("x"); return err }, `invalid time value "5 m" for parameter x`},
	}
	for _, tt := range tests {
		if err := tt.get(); err == nil || err.Error() != tt.want {
			t.Errorf("error %v; want %s", err, tt.want)
		}
	}
}

func TestTimeDefaultUnit(t *testing.T) {
	// A bare number takes the unit of the default, as in Postfix.
	c, err := Load("", map[string]string{"hours": "1h", "seconds": "30"}, []string{"hours=3", "seconds=30"})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.Time("hours"); err != nil || d != 3*time.Hour {
		t.Errorf("Time(hours) = %v, %v", d, err)
	}
	if d, err := c.Time("seconds"); err != nil || d != 30*time.Second {
		t.Errorf("Time(seconds) = %v, %v", d, err)
	}
	c.Set("nodefault", "7")
	if d, err := c.Time("nodefault"); err != nil || d != 7*time.Second {
		t.Errorf("Time(nodefault) = %v, %v", d, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := mustLoad(t, "smtpd_tls_session_cache_database = btree:$data_directory/smtpd_scache\n")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 50 {
				c.Set("process_id", strconv.Itoa(i*100+j))
			}
		}()
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := c.Params(); err != nil {
					t.Error(err)
					return
				}
				if _, err := c.Time("ipc_timeout"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

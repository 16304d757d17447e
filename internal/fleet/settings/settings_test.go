package settings

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"golang.org/x/sys/unix"
)

// The secrets of the fixture. Every error text in these tests is checked
// for them (and for fragments of them).
const (
	password = "Zebra-Pa55-9f3Kq"
	keyAHex  = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
	keyBHex  = "0f1e2d3c4b5a69788796a5b4c3d2e1f0ffeeddccbbaa99887766554433221100"
)

func mustKey(h string) [32]byte {
	var k [32]byte
	if n, err := hex.Decode(k[:], []byte(h)); err != nil || n != 32 {
		panic(h)
	}
	return k
}

type fixture struct {
	dir     string
	pwFile  string
	keyFile string
	caFile  string
	owner   int // mail owner uid that the fixture's files satisfy
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		dir:     dir,
		pwFile:  filepath.Join(dir, "redis.pw"),
		keyFile: filepath.Join(dir, "seal.key"),
		caFile:  filepath.Join(dir, "ca.pem"),
		// Root's files pass as root's; anyone else's pass as the mail
		// owner's.
		owner: os.Geteuid(),
	}
	if f.owner == 0 {
		f.owner = 65534
	}
	writeFile(t, f.pwFile, password+"\n", 0o600)
	writeFile(t, f.keyFile, "# current\n"+keyAHex+"\n\n# previous\n"+keyBHex+"\n", 0o600)
	writeFile(t, f.caFile, "not checked here\n", 0o644)
	return f
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is for new files only, and the umask narrows it.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// settings writes a settings file; @PW@, @KEY@, @CA@ and @DIR@ stand for
// the fixture's paths.
func (f *fixture) settings(t *testing.T, text string) string {
	t.Helper()
	text = strings.NewReplacer("@PW@", f.pwFile, "@KEY@", f.keyFile, "@CA@", f.caFile, "@DIR@", f.dir).Replace(text)
	path := filepath.Join(f.dir, "tlsmgr-redis.cf")
	writeFile(t, path, text, 0o644)
	return path
}

func (f *fixture) load(t *testing.T, text string) *Settings {
	t.Helper()
	s, err := Load(f.settings(t, text), f.owner)
	if err != nil {
		checkNoSecrets(t, err.Error())
		t.Fatalf("Load: %v", err)
	}
	return s
}

// loadErr loads text, which must fail, and returns the error text with
// the fixture's directory replaced by @DIR@.
func (f *fixture) loadErr(t *testing.T, text string) string {
	t.Helper()
	s, err := Load(f.settings(t, text), f.owner)
	if err == nil {
		t.Fatalf("Load succeeded: %v", s)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is a %T, not *Error", err, err)
	}
	msg := err.Error()
	checkNoSecrets(t, msg)
	return strings.ReplaceAll(msg, f.dir, "@DIR@")
}

// checkNoSecrets fails if msg contains any 8-byte window of a secret, in
// text, hex of either case, or raw bytes.
func checkNoSecrets(t *testing.T, msg string) {
	t.Helper()
	ka, kb := mustKey(keyAHex), mustKey(keyBHex)
	for _, secret := range []string{
		password, keyAHex, keyBHex, strings.ToUpper(keyAHex), strings.ToUpper(keyBHex),
		string(ka[:]), string(kb[:]),
	} {
		for i := 0; i+8 <= len(secret); i++ {
			if strings.Contains(msg, secret[i:i+8]) {
				t.Fatalf("message contains a secret: %q", msg)
			}
		}
	}
}

func TestLoadEverySetting(t *testing.T) {
	f := newFixture(t)
	s := f.load(t, `# fleet
servers = sentinel1.example.com:26379, 10.0.0.2:26379 [2001:db8::3]:26379
sentinel_master = mymaster
cluster = no
database = 3
username = tlsmgr
password_file = @PW@
tls = yes
tls_ca_file = @CA@
timeout = 250ms
key_prefix = mx:tlsmgr:
seal_key_file = @KEY@
`)
	want := &Settings{
		Path:           filepath.Join(f.dir, "tlsmgr-redis.cf"),
		Servers:        []string{"sentinel1.example.com:26379", "10.0.0.2:26379", "[2001:db8::3]:26379"},
		SentinelMaster: "mymaster",
		Database:       3,
		Username:       "tlsmgr",
		Password:       password,
		TLS:            true,
		TLSCAFile:      f.caFile,
		TLSCA:          []byte("not checked here\n"),
		Timeout:        250 * time.Millisecond,
		KeyPrefix:      "mx:tlsmgr:",
		SealKeys:       [][32]byte{mustKey(keyAHex), mustKey(keyBHex)},
		Files:          []string{f.pwFile, f.caFile, f.keyFile},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got\n%#v\nwant\n%#v", *s, *want) // Format redacts both
		t.Errorf("got  %q %q %v", s.Password, s.Servers, s.SealKeys)
	}
}

func TestLoadDefaults(t *testing.T) {
	f := newFixture(t)
	s := f.load(t, "servers = redis.example.com:6379\nseal_key_file = @KEY@\n")
	want := &Settings{
		Path:      filepath.Join(f.dir, "tlsmgr-redis.cf"),
		Servers:   []string{"redis.example.com:6379"},
		Timeout:   DefaultTimeout,
		KeyPrefix: DefaultKeyPrefix,
		SealKeys:  [][32]byte{mustKey(keyAHex), mustKey(keyBHex)},
		Files:     []string{f.keyFile},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %v, want %v", s, want)
	}
	if DefaultTimeout != 20*time.Millisecond || DefaultKeyPrefix != "tlsmgr:" {
		t.Errorf("defaults changed: %v %q", DefaultTimeout, DefaultKeyPrefix)
	}
}

func TestLoadCluster(t *testing.T) {
	f := newFixture(t)
	s := f.load(t, "servers = a:7000 b:7001 c:7002\ncluster = YES\ndatabase = 0\nseal_key_file = @KEY@\n")
	if !s.Cluster || len(s.Servers) != 3 || s.Database != 0 {
		t.Errorf("got %v", s)
	}
}

// The syntax of main.cf: comments and blank lines anywhere, continuation
// lines starting with white space (even after a comment), CRLF, spacing
// around '=', and '#' inside a value.
func TestLoadSyntax(t *testing.T) {
	f := newFixture(t)
	s := f.load(t, "  # indented comment\r\n"+
		"servers=[::1]:6379,\r\n"+
		"# a comment inside the continued value\n"+
		"\n"+
		"\t  10.0.0.2:6379 ,10.0.0.3:6379\n"+
		"sentinel_master\t=\t m1 \n"+
		"key_prefix = a#b\n"+
		"tls = No\n"+
		"seal_key_file = @KEY@") // no final newline
	if want := []string{"[::1]:6379", "10.0.0.2:6379", "10.0.0.3:6379"}; !reflect.DeepEqual(s.Servers, want) {
		t.Errorf("servers %q, want %q", s.Servers, want)
	}
	if s.SentinelMaster != "m1" || s.KeyPrefix != "a#b" || s.TLS {
		t.Errorf("got %v", s)
	}
}

func TestServers(t *testing.T) {
	f := newFixture(t)
	good := map[string]string{
		"localhost:6379":             "localhost:6379",
		"127.0.0.1:1":                "127.0.0.1:1",
		"redis-1.example.com.:65535": "redis-1.example.com.:65535",
		"my_redis:6379":              "my_redis:6379",
		"[::1]:6379":                 "[::1]:6379",
		"[fe80::1%eth0]:6379":        "[fe80::1%eth0]:6379",
		"[::ffff:10.0.0.1]:6379":     "[::ffff:10.0.0.1]:6379",
		"unix:/run/redis/r.sock":     "unix:/run/redis/r.sock",
	}
	for in, want := range good {
		s := f.load(t, "servers = "+in+"\nseal_key_file = @KEY@\n")
		if len(s.Servers) != 1 || s.Servers[0] != want {
			t.Errorf("%q: got %q, want %q", in, s.Servers, want)
		}
	}
	bad := map[string]string{
		"localhost":           `"localhost" is not host:port, [ipv6]:port or unix:/path`,
		"::1:6379":            `"::1:6379" is not host:port, [ipv6]:port or unix:/path`,
		"[::1]":               `"[::1]" is not [ipv6]:port`,
		"[10.0.0.1]:6379":     `"[10.0.0.1]:6379" is not [ipv6]:port`,
		"[::1]6379":           `"[::1]6379" is not [ipv6]:port`,
		"host:":               `"host:" has no port number`,
		"host:redis":          `"host:redis" has no port number`,
		"host:0":              `"host:0" has a port out of range (1-65535)`,
		"host:65536":          `"host:65536" has a port out of range (1-65535)`,
		":6379":               `":6379" is not host:port (bad host name)`,
		"bad..name:6379":      `"bad..name:6379" is not host:port (bad host name)`,
		"h/x:6379":            `"h/x:6379" is not host:port (bad host name)`,
		"unix:run/redis.sock": `"unix:run/redis.sock" is not unix:/absolute/path`,
		"a:1 b:2 a:1":         `"a:1" is listed twice`,
		",":                   `no server in ","`,
		"a:1 b:2":             `2 servers given; more than one needs cluster = yes (seed nodes) or sentinel_master (sentinels)`,
	}
	for in, want := range bad {
		got := f.loadErr(t, "# x\nservers = "+in+"\nseal_key_file = @KEY@\n")
		if want := "@DIR@/tlsmgr-redis.cf, line 2: servers: " + want; got != want {
			t.Errorf("%q:\n got %s\nwant %s", in, got, want)
		}
	}
}

func TestTimeout(t *testing.T) {
	f := newFixture(t)
	good := map[string]time.Duration{
		"10ms":    10 * time.Millisecond,
		"1ms":     time.Millisecond,
		"1s":      time.Second,
		"10s":     10 * time.Second,
		"10000ms": 10 * time.Second,
		"0010ms":  10 * time.Millisecond,
	}
	for in, want := range good {
		if s := f.load(t, "servers = r:1\ntimeout = "+in+"\nseal_key_file = @KEY@\n"); s.Timeout != want {
			t.Errorf("%q: got %v, want %v", in, s.Timeout, want)
		}
	}
	bad := map[string]string{
		"10x":                    `"10x" is not a time`,
		"ms":                     `"ms" is not a time`,
		"10":                     `"10" has no unit (ms or s)`,
		"10 ms":                  `"10 ms" is not a time`,
		"10msec":                 `"10msec" is not a time`,
		"10MS":                   `"10MS" is not a time`,
		"1h30m":                  `"1h30m" is not a time`,
		"-1s":                    `"-1s" is not a time`,
		"1.5s":                   `"1.5s" is not a time`,
		"0ms":                    `"0ms" must be more than zero`,
		"0s":                     `"0s" must be more than zero`,
		"11s":                    `"11s" is more than 10s`,
		"10001ms":                `"10001ms" is more than 10s`,
		"1m":                     `"1m" is more than 10s`,
		"1w":                     `"1w" is more than 10s`,
		"99999999999999999999ms": `"99999999999999999999ms" is more than 10s`,
	}
	for in, want := range bad {
		got := f.loadErr(t, "servers = r:1\n\n\ntimeout = "+in+"\nseal_key_file = @KEY@\n")
		if want := "@DIR@/tlsmgr-redis.cf, line 4: timeout: " + want; got != want {
			t.Errorf("%q:\n got %s\nwant %s", in, got, want)
		}
	}
}

// Every error names the file, the line and the setting.
func TestErrors(t *testing.T) {
	f := newFixture(t)
	writeFile(t, filepath.Join(f.dir, "notafile"), "", 0o644)
	if err := os.Mkdir(filepath.Join(f.dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	const file = "@DIR@/tlsmgr-redis.cf"
	tests := []struct {
		name, text, want string
	}{
		{"unknown", "servers = r:1\nseal_key_file = @KEY@\nfrobnicate = 1\n",
			file + ", line 3: frobnicate: unknown setting"},
		{"password inline", "servers = r:1\npassword = " + password + "\nseal_key_file = @KEY@\n",
			file + ", line 2: password: unknown setting; put the password in a file named by password_file"},
		{"case matters", "Servers = r:1\nseal_key_file = @KEY@\n",
			file + ", line 1: Servers: unknown setting"},
		{"control characters", "servers = r:1\nx\x1b[2J\x7f = 1\nseal_key_file = @KEY@\n",
			file + `, line 2: "x\x1b[2J\x7f": unknown setting`},
		{"unicode fold", "servers = r:1\ntls = ye\u017f\nseal_key_file = @KEY@\n",
			file + ", line 2: tls: \"ye\u017f\" is not yes or no"},
		{"duplicate", "servers = r:1\ntimeout = 1s\nseal_key_file = @KEY@\ntimeout = 1s\n",
			file + ", line 4: timeout: set again (first set on line 2)"},
		{"duplicate key file", "servers = r:1\nseal_key_file = @KEY@\nseal_key_file = @KEY@\n",
			file + ", line 3: seal_key_file: set again (first set on line 2)"},
		{"empty value", "servers = r:1\nkey_prefix =\nseal_key_file = @KEY@\n",
			file + ", line 2: key_prefix: empty value; remove the line to leave it unset"},
		{"no equals", "servers = r:1\nseal_key_file @KEY@\n",
			file + `, line 2: not a "name = value" line`},
		{"no name", "= r:1\n",
			file + `, line 1: not a "name = value" line`},
		{"orphan continuation", "# first\n  servers = r:1\nseal_key_file = @KEY@\n",
			file + ", line 2: starts with white space, so it continues the previous setting, but there is none"},
		{"continued line number", "servers = r:1\nseal_key_file = @KEY@\ntimeout = 1\n  0x\n",
			file + `, line 3: timeout: "1  0x" is not a time`}, // joined verbatim, as main.cf
		{"missing servers", "seal_key_file = @KEY@\n",
			file + ": servers: missing; it is required"},
		{"missing seal key file", "servers = r:1\n",
			file + ": seal_key_file: missing; it is required"},
		{"empty file", "",
			file + ": servers: missing; it is required"},
		{"cluster bool", "servers = r:1\ncluster = true\nseal_key_file = @KEY@\n",
			file + `, line 2: cluster: "true" is not yes or no`},
		{"tls bool", "servers = r:1\ntls = 1\nseal_key_file = @KEY@\n",
			file + `, line 2: tls: "1" is not yes or no`},
		{"database negative", "servers = r:1\ndatabase = -1\nseal_key_file = @KEY@\n",
			file + `, line 2: database: "-1" is not a database number (an integer from 0)`},
		{"database word", "servers = r:1\ndatabase = one\nseal_key_file = @KEY@\n",
			file + `, line 2: database: "one" is not a database number (an integer from 0)`},
		{"database huge", "servers = r:1\ndatabase = 2147483648\nseal_key_file = @KEY@\n",
			file + `, line 2: database: "2147483648" is not a database number (an integer from 0)`},
		{"sentinel_master space", "servers = r:1\nsentinel_master = my master\nseal_key_file = @KEY@\n",
			file + `, line 2: sentinel_master: "my master" is not a master name (printable characters, no white space or commas)`},
		{"username comma", "servers = r:1\nusername = a,b\npassword_file = @PW@\nseal_key_file = @KEY@\n",
			file + `, line 2: username: "a,b" is not a user name (printable characters, no white space or commas)`},
		{"key_prefix space", "servers = r:1\nkey_prefix = a b\nseal_key_file = @KEY@\n",
			file + `, line 2: key_prefix: "a b" is not a key prefix (printable characters, no white space or commas)`},
		{"relative key file", "servers = r:1\nseal_key_file = seal.key\n",
			file + `, line 2: seal_key_file: "seal.key" is not an absolute path`},
		{"relative password file", "servers = r:1\npassword_file = pw\nseal_key_file = @KEY@\n",
			file + `, line 2: password_file: "pw" is not an absolute path`},
		{"relative ca file", "servers = r:1\ntls = yes\ntls_ca_file = ca.pem\nseal_key_file = @KEY@\n",
			file + `, line 3: tls_ca_file: "ca.pem" is not an absolute path`},
		{"missing ca file", "servers = r:1\ntls = yes\ntls_ca_file = @DIR@/none.pem\nseal_key_file = @KEY@\n",
			file + `, line 3: tls_ca_file: open @DIR@/none.pem: no such file or directory`},
		{"ca directory", "servers = r:1\ntls = yes\ntls_ca_file = @DIR@/adir\nseal_key_file = @KEY@\n",
			file + `, line 3: tls_ca_file: refusing to use @DIR@/adir: it is not a regular file (it is a directory)`},
		{"cluster and sentinel", "servers = r:1\ncluster = yes\nsentinel_master = m\nseal_key_file = @KEY@\n",
			file + ", line 3: sentinel_master: not allowed with cluster (line 2); Sentinel and Cluster are two different set-ups"},
		{"sentinel and cluster", "servers = r:1\nsentinel_master = m\ncluster = yes\nseal_key_file = @KEY@\n",
			file + ", line 3: cluster: not allowed with sentinel_master (line 2); Sentinel and Cluster are two different set-ups"},
		{"cluster and database", "servers = r:1\ndatabase = 2\ncluster = yes\nseal_key_file = @KEY@\n",
			file + ", line 3: cluster: not allowed with database (line 2); Redis Cluster has only database 0"},
		{"unix and tls", "servers = unix:/run/r.sock\ntls = yes\nseal_key_file = @KEY@\n",
			file + ", line 2: tls: not allowed with servers (line 1); unix:/run/r.sock is a local socket"},
		{"tls and unix", "tls = yes\nservers = unix:/run/r.sock\nseal_key_file = @KEY@\n",
			file + ", line 2: servers: not allowed with tls (line 1); unix:/run/r.sock is a local socket"},
		{"unix and cluster", "servers = unix:/run/r.sock\ncluster = yes\nseal_key_file = @KEY@\n",
			file + ", line 2: cluster: not allowed with servers (line 1); unix:/run/r.sock is a local socket"},
		{"unix and sentinel", "servers = a:1 unix:/run/r.sock\nsentinel_master = m\nseal_key_file = @KEY@\n",
			file + ", line 2: sentinel_master: not allowed with servers (line 1); unix:/run/r.sock is a local socket"},
		{"ca without tls", "servers = r:1\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n",
			file + ", line 2: tls_ca_file: needs tls = yes"},
		{"ca with tls off", "servers = r:1\ntls = no\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n",
			file + ", line 3: tls_ca_file: needs tls = yes"},
		{"username without password", "servers = r:1\nusername = u\nseal_key_file = @KEY@\n",
			file + ", line 2: username: needs password_file (Redis authenticates a user name with a password)"},
		{"missing key file", "servers = r:1\nseal_key_file = @DIR@/none\n",
			file + ", line 2: seal_key_file: open @DIR@/none: no such file or directory"},
		{"missing password file", "servers = r:1\npassword_file = @DIR@/none\nseal_key_file = @KEY@\n",
			file + ", line 2: password_file: open @DIR@/none: no such file or directory"},
		{"key file is a directory", "servers = r:1\nseal_key_file = @DIR@/adir\n",
			file + ", line 2: seal_key_file: refusing to use @DIR@/adir: it is not a regular file (it is a directory)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.loadErr(t, tt.text); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestErrorUnwrap(t *testing.T) {
	f := newFixture(t)
	_, err := Load(f.settings(t, "servers = r:1\nseal_key_file = @DIR@/none\n"), f.owner)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v does not unwrap to fs.ErrNotExist", err)
	}
	_, err = Load(filepath.Join(f.dir, "no-settings.cf"), f.owner)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v does not unwrap to fs.ErrNotExist", err)
	}
}

func TestPasswordFile(t *testing.T) {
	f := newFixture(t)
	text := "servers = r:1\npassword_file = @PW@\nseal_key_file = @KEY@\n"
	for content, want := range map[string]string{
		password:                     password,
		password + "\n":              password,
		password + "\r\n":            password,
		password + "\nsecond line\n": password,
		" spaced  pass \n":           " spaced  pass ",
	} {
		writeFile(t, f.pwFile, content, 0o600)
		if s := f.load(t, text); s.Password != want {
			t.Errorf("%q: got %q, want %q", content, s.Password, want)
		}
	}
	for _, content := range []string{"", "\n", "\r\n" + password + "\n"} {
		writeFile(t, f.pwFile, content, 0o600)
		want := "@DIR@/tlsmgr-redis.cf, line 2: password_file: @DIR@/redis.pw: the first line, which holds the password, is empty"
		if got := f.loadErr(t, text); got != want {
			t.Errorf("%q:\n got %s\nwant %s", content, got, want)
		}
	}
}

func TestSealKeyFile(t *testing.T) {
	f := newFixture(t)
	text := "servers = r:1\nseal_key_file = @KEY@\n"
	writeFile(t, f.keyFile, "\n  # new key first\n  "+strings.ToUpper(keyBHex)+"  \r\n#old\n"+keyAHex, 0o600)
	s := f.load(t, text)
	if want := [][32]byte{mustKey(keyBHex), mustKey(keyAHex)}; !reflect.DeepEqual(s.SealKeys, want) {
		t.Errorf("keys %x, want %x", s.SealKeys, want)
	}

	const prefix = "@DIR@/tlsmgr-redis.cf, line 2: seal_key_file: @DIR@/seal.key"
	bad := map[string]string{
		"":                                        prefix + " has no key; add a line made with openssl rand -hex 32",
		"# only a comment\n\n":                    prefix + " has no key; add a line made with openssl rand -hex 32",
		keyAHex + "\n" + keyAHex[:63] + "\n":      prefix + ", line 2: a key is 64 hex digits, this line has 63 characters",
		keyAHex + "0\n":                           prefix + ", line 1: a key is 64 hex digits, this line has 65 characters",
		keyAHex[:63] + "g\n":                      prefix + ", line 1: a key is 64 hex digits, this line has other characters",
		"0x" + keyAHex[:62] + "\n":                prefix + ", line 1: a key is 64 hex digits, this line has other characters",
		keyAHex[:32] + " " + keyAHex[33:] + "\n":  prefix + ", line 1: a key is 64 hex digits, this line has other characters",
		keyAHex + " # trailing comment\n":         prefix + ", line 1: a key is 64 hex digits, this line has 83 characters",
		strings.Repeat("0", 64) + "\n":            prefix + ", line 1: the key is all zeros; make one with openssl rand -hex 32",
		keyAHex + "\n" + keyBHex + "\n" + keyAHex: prefix + ", line 3: the same key as key 1",
		keyAHex + "\n" + strings.ToUpper(keyAHex): prefix + ", line 2: the same key as key 1",
	}
	for content, want := range bad {
		writeFile(t, f.keyFile, content, 0o600)
		if got := f.loadErr(t, text); got != want {
			t.Errorf("%q:\n got %s\nwant %s", content, got, want)
		}
	}
}

func TestSecretFileMode(t *testing.T) {
	for _, which := range []string{"password_file", "seal_key_file"} {
		t.Run(which, func(t *testing.T) {
			f := newFixture(t)
			path := map[string]string{"password_file": f.pwFile, "seal_key_file": f.keyFile}[which]
			text := "servers = r:1\npassword_file = @PW@\nseal_key_file = @KEY@\n"
			line := map[string]int{"password_file": 2, "seal_key_file": 3}[which]
			for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				f.load(t, text)
			}
			for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o666} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("@DIR@/tlsmgr-redis.cf, line %d: %s: refusing to use %s: it is owned by uid %d with mode %04o; it must be owned by root or the mail owner (uid %d) and give no access to group or others (e.g. mode 0600)",
					line, which, strings.ReplaceAll(path, f.dir, "@DIR@"), os.Geteuid(), mode, f.owner)
				if got := f.loadErr(t, text); got != want {
					t.Errorf("mode %04o:\n got %s\nwant %s", mode, got, want)
				}
			}
		})
	}
}

func TestSecretFileOwner(t *testing.T) {
	testenv.NeedRoot(t)
	f := newFixture(t)
	text := "servers = r:1\npassword_file = @PW@\nseal_key_file = @KEY@\n"
	path := func(p string) string { return strings.ReplaceAll(p, f.dir, "@DIR@") }
	load := func(owner int) (*Settings, error) { return Load(f.settings(t, text), owner) }

	// Root's files, whoever the mail owner is.
	if _, err := load(1000); err != nil {
		t.Fatalf("root-owned files refused: %v", err)
	}
	for _, p := range []string{f.pwFile, f.keyFile} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// The mail owner's files.
	if s, err := load(65534); err != nil || s.Password != password {
		t.Fatalf("mail owner's files: %v", err)
	}
	// Another account's files.
	_, err := load(1000)
	want := fmt.Sprintf("@DIR@/tlsmgr-redis.cf, line 2: password_file: refusing to use %s: it is owned by uid 65534 with mode 0600; it must be owned by root or the mail owner (uid 1000) and give no access to group or others (e.g. mode 0600)", path(f.pwFile))
	if err == nil || path(err.Error()) != want {
		t.Errorf("\n got %v\nwant %s", err, want)
	}
	checkNoSecrets(t, fmt.Sprint(err))
	if err := os.Chown(f.pwFile, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err = load(1000)
	want = fmt.Sprintf("@DIR@/tlsmgr-redis.cf, line 3: seal_key_file: refusing to use %s: it is owned by uid 65534 with mode 0600; it must be owned by root or the mail owner (uid 1000) and give no access to group or others (e.g. mode 0600)", path(f.keyFile))
	if err == nil || path(err.Error()) != want {
		t.Errorf("\n got %v\nwant %s", err, want)
	}
	checkNoSecrets(t, fmt.Sprint(err))
}

// A symbolic link of another account's is refused even when what it
// leads to would pass: whoever can write the directory could have made
// it. Root's own links are followed (see safefile).
func TestSecretFileLinks(t *testing.T) {
	f := newFixture(t)
	const prefix = "@DIR@/tlsmgr-redis.cf, line 2: seal_key_file: refusing to use @DIR@/k: "
	text := "servers = r:1\nseal_key_file = @DIR@/k\n"
	k := filepath.Join(f.dir, "k")
	foreign := fmt.Sprintf("it is a symbolic link owned by uid %d (only links that root made are followed)", safefiletest.LinkOwner())

	safefiletest.PlantLink(t, f.keyFile, k)
	if got, want := f.loadErr(t, text), prefix+foreign; got != want {
		t.Errorf("symlink:\n got %s\nwant %s", got, want)
	}
	os.Remove(k)
	safefiletest.PlantLink(t, filepath.Join(f.dir, "nowhere"), k)
	if got, want := f.loadErr(t, text), prefix+foreign; got != want {
		t.Errorf("dangling symlink:\n got %s\nwant %s", got, want)
	}
	os.Remove(k)

	if err := os.Link(f.keyFile, k); err != nil {
		t.Fatal(err)
	}
	if got, want := f.loadErr(t, text), prefix+"it has 2 hard links; it must have one"; got != want {
		t.Errorf("hard link:\n got %s\nwant %s", got, want)
	}
	os.Remove(k)

	// A FIFO must be refused at once, not wait for a writer.
	if err := unix.Mkfifo(k, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := f.loadErr(t, text), prefix+"it is not a regular file (it is a FIFO)"; got != want {
		t.Errorf("fifo:\n got %s\nwant %s", got, want)
	}
	os.Remove(k)

	// The password file follows the same rules.
	safefiletest.PlantLink(t, f.pwFile, k)
	got := f.loadErr(t, "servers = r:1\npassword_file = @DIR@/k\nseal_key_file = @KEY@\n")
	if want := "@DIR@/tlsmgr-redis.cf, line 2: password_file: refusing to use @DIR@/k: " + foreign; got != want {
		t.Errorf("password symlink:\n got %s\nwant %s", got, want)
	}
}

func TestSecretFileTooLarge(t *testing.T) {
	f := newFixture(t)
	writeFile(t, f.keyFile, keyAHex+"\n"+strings.Repeat("#", maxSecretSize), 0o600)
	got := f.loadErr(t, "servers = r:1\nseal_key_file = @KEY@\n")
	if want := "@DIR@/tlsmgr-redis.cf, line 2: seal_key_file: @DIR@/seal.key is larger than 65536 bytes"; got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

// Printing the settings any way a log line might never shows a secret.
func TestPrintingHidesSecrets(t *testing.T) {
	f := newFixture(t)
	s := f.load(t, "servers = r:1\nusername = u\npassword_file = @PW@\nseal_key_file = @KEY@\n")
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("loaded", "settings", s, "value", *s)
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v %x", *s, *s, *s, *s), logged.String(),
	} {
		checkNoSecrets(t, out)
		if !strings.Contains(out, "password=(set)") || !strings.Contains(out, "seal_keys=2") {
			t.Errorf("settings not described: %s", out)
		}
	}
}

// The settings file names files read as root and where to send their
// contents: one that someone else could change, or reached through a
// link someone else made, is refused; a FIFO is refused at once, not
// waited on.
func TestSettingsFileSafety(t *testing.T) {
	f := newFixture(t)
	path := f.settings(t, "servers = r:1\nseal_key_file = @KEY@\n")
	load := func() string {
		t.Helper()
		s, err := Load(path, f.owner)
		if err == nil {
			t.Fatalf("Load succeeded: %v", s)
		}
		return strings.ReplaceAll(err.Error(), f.dir, "@DIR@")
	}
	for _, mode := range []os.FileMode{0o664, 0o646, 0o666} {
		os.Chmod(path, mode)
		want := fmt.Sprintf("with mode %04o; it names files read as root, so it must be owned by", mode)
		if got := load(); !strings.Contains(got, want) {
			t.Errorf("mode %04o: %s", mode, got)
		}
	}
	os.Chmod(path, 0o644)
	if _, err := Load(path, f.owner); err != nil {
		t.Fatalf("mode 0644: %v", err)
	}
	if os.Geteuid() == 0 {
		// As root, another account's file is refused, the mail owner's too.
		for _, uid := range []int{f.owner, 1234} {
			os.Chown(path, uid, -1)
			if got := load(); !strings.Contains(got, fmt.Sprintf("is owned by uid %d", uid)) || !strings.Contains(got, "must be owned by root and") {
				t.Errorf("owned by %d: %s", uid, got)
			}
		}
		os.Chown(path, 0, -1)
	}
	link := filepath.Join(f.dir, "link.cf")
	safefiletest.PlantLink(t, path, link)
	if _, err := Load(link, f.owner); err == nil || !strings.Contains(err.Error(), "link.cf: it is a symbolic link owned by uid") {
		t.Errorf("symbolic link: %v", err)
	}
	fifo := filepath.Join(f.dir, "fifo.cf")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(fifo, f.owner); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Load waited on a FIFO")
	}
}

// Package settings reads the file of settings that names a Redis database
// in main.cf, as Postfix's network tables do (memcache:/etc/postfix/x.cf):
//
//	smtpd_tls_session_cache_database = redis:/etc/postfix/tlsmgr-redis.cf
//	tlsmgr_ticket_key_database = redis:/etc/postfix/tlsmgr-redis.cf
//
// The file has main.cf's syntax, which operators of memcache_table(5)
// and pgsql_table(5) already know: "name = value" lines; a line whose
// first non-blank character is '#' is a comment, and blank lines are
// ignored, neither ending a setting in progress; a line that starts with
// white space continues the previous one. As in main.cf, '#' after a
// value is part of the value, not a comment.
//
// Unlike main.cf it is strict, because a typo here silently splits a
// fleet or leaks to the wrong Redis: an unknown or repeated setting, an
// empty value, or settings that contradict each other are errors, each
// naming the file, the line and the setting.
//
// The two secrets, the Redis password and the seal keys, live in files of
// their own (password_file, seal_key_file), never in this file, so that
// the settings can be readable by anyone while the secrets are readable
// only by root or the mail owner.
package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/safefile"
)

// Settings is one parsed settings file.
type Settings struct {
	Path string // the file, for messages

	// Servers are host:port, [ipv6]:port or unix:/path. With
	// SentinelMaster they are the sentinels; with Cluster, seed nodes.
	Servers        []string
	SentinelMaster string
	Cluster        bool
	Database       int
	Username       string
	Password       string // read from password_file; never logged
	TLS            bool
	TLSCAFile      string
	// TLSCA is the contents of TLSCAFile, as Load read them after
	// checking the file: the roots redisconn trusts. The file is not
	// read again, so that it cannot be swapped between the check and
	// the use. Not logged (String shows TLSCAFile).
	TLSCA     []byte
	Timeout   time.Duration // per operation; default 20ms
	KeyPrefix string        // default "tlsmgr:"
	// SealKeys are the lines of seal_key_file: the first seals, all
	// unseal. Never logged.
	SealKeys [][32]byte
	// Files are the files the settings name (password_file,
	// seal_key_file, tls_ca_file), for telling whether they changed.
	Files []string
}

// Defaults of optional settings.
const (
	// DefaultTimeout: at 10ms a busy 2-core host missed the deadline
	// with Redis healthy twice as often, and opened the breaker 15 times
	// in 35 s against 2 (docs/fleet.md, "Choosing timeout").
	DefaultTimeout   = 20 * time.Millisecond
	DefaultKeyPrefix = "tlsmgr:"
)

// MaxTimeout bounds timeout: smtpd waits for tlsmgr during a handshake,
// and a per-operation deadline beyond this would stall mail whenever
// Redis is unreachable.
const MaxTimeout = 10 * time.Second

// Size limits of the files read, so that a wrong path (a device, a log)
// fails at once instead of filling memory.
const (
	maxSettingsSize = 1 << 20
	maxSecretSize   = 64 << 10
	maxCASize       = 16 << 20 // a system's whole bundle is a few hundred kB
)

// Error is a settings file that cannot be used. Its text never contains
// a secret.
type Error struct {
	File    string
	Line    int    // 0 when no single line is at fault (a missing setting)
	Setting string // "" for a line that is not "name = value"
	Msg     string
	Err     error // the system error behind Msg, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ", line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Setting != "" {
		b.WriteString(e.Setting)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// entry is one setting as found in the file.
type entry struct {
	name, value string
	line        int
}

// Load reads the settings file at path, then the password and seal key
// files it names. The settings file must be root's (or the caller's
// effective uid's, when not root) and writable by nobody else; the two
// files it names must be owned by root or by mailOwnerUID and be
// inaccessible to group and others; tls_ca_file is held to the settings
// file's rule. Each is opened by safefile's rule: a regular file of one
// link, reached through no symbolic link but root's. Every error is an
// *Error, except that reading path itself may fail with an
// *os.PathError.
func Load(path string, mailOwnerUID int) (*Settings, error) {
	data, err := readSettingsFile(path)
	if err != nil {
		return nil, err
	}
	p := &parser{file: path, seen: map[string]*entry{}}
	return p.parse(data, mailOwnerUID)
}

// readSettingsFile reads the settings file. It names files that are read
// as root (password_file, seal_key_file) and a server that is sent the
// password: whoever can change it could have a root-only file sent to a
// server of theirs. So it must be owned by root (or, when the daemon does
// not run as root, by its own account) and writable by nobody else, and
// it is opened by safefile's rule (no symbolic link but root's, no FIFO
// waited on, one link).
func readSettingsFile(path string) ([]byte, error) {
	data, err := readByRule(rootFileRule("it names files read as root"), path, maxSettingsSize)
	var unsafe *safefile.UnsafeError
	switch {
	case errors.As(err, &unsafe):
		return nil, &Error{File: path, Msg: unsafe.Why, Err: err}
	case err == errTooLarge:
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d bytes; is this the right file?", maxSettingsSize)}
	case err != nil:
		return nil, err
	}
	return data, nil
}

// errTooLarge is readByRule's error for a file over its limit: each
// caller says so in its own words.
var errTooLarge = errors.New("file too large")

// readByRule opens path by rule and reads it whole, refusing it with
// errTooLarge if it has more than limit bytes. Other errors are rule.Open's
// (*os.PathError, *safefile.UnsafeError) and the read's (*os.PathError).
// On any error what was read is cleared, for it may be a secret.
func readByRule(rule safefile.Rule, path string, limit int64) ([]byte, error) {
	f, err := rule.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = errTooLarge
	}
	if err != nil {
		clear(data)
		return nil, err
	}
	return data, nil
}

// rootFileRule is safefile's rule for the files that say where the
// password goes (this file, tls_ca_file): owned by root, or by the
// daemon's own account when it does not run as root, and writable by
// nobody else. why says what the file does.
func rootFileRule(why string) safefile.Rule {
	euid := os.Geteuid()
	who := "root"
	if euid != 0 {
		who = fmt.Sprintf("root or uid %d", euid)
	}
	return safefile.Rule{
		Owners: []int{0, euid},
		Forbid: 0o022,
		Need:   fmt.Sprintf("%s, so it must be owned by %s and writable by nobody else", why, who),
	}
}

// readCAFile reads tls_ca_file, by rootFileRule: it says which server is
// trusted with the password. It is read once, by Load, into
// Settings.TLSCA.
func readCAFile(path string) ([]byte, error) {
	data, err := readByRule(rootFileRule("it says which server is trusted with the password"), path, maxCASize)
	if err == errTooLarge {
		return nil, fmt.Errorf("%s is larger than %d bytes; is this the right file?", path, maxCASize)
	}
	return data, err
}

type parser struct {
	file    string
	seen    map[string]*entry
	entries []*entry
}

func (p *parser) errf(e *entry, format string, args ...any) *Error {
	return &Error{File: p.file, Line: e.line, Setting: e.name, Msg: fmt.Sprintf(format, args...)}
}

// conflict reports two settings that cannot go together, at the line of
// the later one, since that is usually the one just added.
func (p *parser) conflict(a, b *entry, why string) *Error {
	if a.line > b.line {
		a, b = b, a
	}
	return p.errf(b, "not allowed with %s (line %d)%s", a.name, a.line, why)
}

// settingNames are the settings this file may hold, in the order the
// documentation lists them.
var settingNames = []string{
	"servers", "sentinel_master", "cluster", "database", "username",
	"password_file", "tls", "tls_ca_file", "timeout", "key_prefix",
	"seal_key_file",
}

func (p *parser) parse(data []byte, mailOwnerUID int) (*Settings, error) {
	// Where Postfix warns and skips a continuation line with nothing to
	// continue, this is an error: a setting could be lost unseen.
	lines, orphans := config.LogicalLines(data)
	if len(orphans) > 0 {
		return nil, &Error{File: p.file, Line: orphans[0].Line, Msg: "starts with white space, so it continues the previous setting, but there is none"}
	}
	for _, l := range lines {
		name, value, reason := config.SplitNameValue(l.Text)
		if reason != "" {
			return nil, &Error{File: p.file, Line: l.Line, Msg: `not a "name = value" line`}
		}
		e := &entry{name: name, value: value, line: l.Line}
		switch {
		case !isSetting(name):
			if !isToken(name) {
				// Control characters stay out of the log.
				e.name = strconv.Quote(name)
			}
			hint := ""
			if name == "password" {
				hint = "; put the password in a file named by password_file"
			}
			return nil, p.errf(e, "unknown setting%s", hint)
		case p.seen[name] != nil:
			return nil, p.errf(e, "set again (first set on line %d)", p.seen[name].line)
		case value == "":
			return nil, p.errf(e, "empty value; remove the line to leave it unset")
		}
		p.seen[name] = e
		p.entries = append(p.entries, e)
	}

	s := &Settings{Path: p.file, Timeout: DefaultTimeout, KeyPrefix: DefaultKeyPrefix}
	for _, e := range p.entries {
		if err := p.apply(s, e); err != nil {
			return nil, err
		}
	}
	if err := p.crossCheck(s); err != nil {
		return nil, err
	}
	// The secrets last: no file is opened for a file of settings that is
	// wrong anyway.
	if e := p.seen["password_file"]; e != nil {
		pw, err := readPassword(e.value, mailOwnerUID)
		if err != nil {
			return nil, p.secretErr(e, err)
		}
		s.Password = pw
	}
	e := p.seen["seal_key_file"]
	keys, err2 := readSealKeys(e.value, mailOwnerUID)
	if err2 != nil {
		return nil, p.secretErr(e, err2)
	}
	s.SealKeys = keys
	return s, nil
}

func (p *parser) secretErr(e *entry, serr *secretError) *Error {
	err := p.errf(e, "%s", serr.msg)
	err.Err = serr.err
	return err
}

func isSetting(name string) bool {
	for _, n := range settingNames {
		if n == name {
			return true
		}
	}
	return false
}

func (p *parser) apply(s *Settings, e *entry) error {
	v := e.value
	switch e.name {
	case "servers":
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r < 128 && config.IsSpace(byte(r)) }) {
			addr, why := parseServer(f)
			if why != "" {
				return p.errf(e, "%q %s", f, why)
			}
			for _, old := range s.Servers {
				if old == addr {
					return p.errf(e, "%q is listed twice", f)
				}
			}
			s.Servers = append(s.Servers, addr)
		}
		if len(s.Servers) == 0 {
			return p.errf(e, "no server in %q", v)
		}
	case "sentinel_master":
		if !isToken(v) {
			return p.errf(e, "%q is not a master name (printable characters, no white space or commas)", v)
		}
		s.SentinelMaster = v
	case "cluster", "tls":
		b, ok := config.ParseBool(v)
		if !ok {
			return p.errf(e, "%q is not yes or no", v)
		}
		if e.name == "cluster" {
			s.Cluster = b
		} else {
			s.TLS = b
		}
	case "database":
		n, ok := parseDatabase(v)
		if !ok {
			return p.errf(e, "%q is not a database number (an integer from 0)", v)
		}
		s.Database = n
	case "username":
		if !isToken(v) {
			return p.errf(e, "%q is not a user name (printable characters, no white space or commas)", v)
		}
		s.Username = v
	case "password_file", "seal_key_file":
		if !strings.HasPrefix(v, "/") {
			return p.errf(e, "%q is not an absolute path", v)
		}
		s.Files = append(s.Files, v)
	case "tls_ca_file":
		if !strings.HasPrefix(v, "/") {
			return p.errf(e, "%q is not an absolute path", v)
		}
		s.Files = append(s.Files, v)
		// Read now, once: a wrong path fails at start-up with its line,
		// not at the first connection, and redisconn trusts these bytes,
		// not whatever is at the path when it connects.
		ca, err := readCAFile(v)
		if err != nil {
			perr := p.errf(e, "%v", err)
			perr.Err = err
			return perr
		}
		s.TLSCAFile, s.TLSCA = v, ca
	case "timeout":
		d, why := parseTimeout(v)
		if why != "" {
			return p.errf(e, "%q %s", v, why)
		}
		s.Timeout = d
	case "key_prefix":
		if !isToken(v) {
			return p.errf(e, "%q is not a key prefix (printable characters, no white space or commas)", v)
		}
		s.KeyPrefix = v
	}
	return nil
}

func (p *parser) crossCheck(s *Settings) error {
	seen := p.seen
	for _, name := range []string{"servers", "seal_key_file"} {
		if seen[name] == nil {
			return &Error{File: p.file, Setting: name, Msg: "missing; it is required"}
		}
	}
	unix := ""
	for _, a := range s.Servers {
		if strings.HasPrefix(a, "unix:") {
			unix = a
			break
		}
	}
	cluster := seen["cluster"]
	if s.Cluster {
		if e := seen["sentinel_master"]; e != nil {
			return p.conflict(cluster, e, "; Sentinel and Cluster are two different set-ups")
		}
		if e := seen["database"]; e != nil && s.Database != 0 {
			return p.conflict(cluster, e, "; Redis Cluster has only database 0")
		}
	}
	if unix != "" {
		// Sentinels and cluster nodes hand out TCP addresses of other
		// nodes, and TLS over a local socket protects nothing.
		if s.Cluster {
			return p.conflict(seen["servers"], cluster, fmt.Sprintf("; %s is a local socket", unix))
		}
		if e := seen["sentinel_master"]; e != nil {
			return p.conflict(seen["servers"], e, fmt.Sprintf("; %s is a local socket", unix))
		}
		if e := seen["tls"]; e != nil && s.TLS {
			return p.conflict(seen["servers"], e, fmt.Sprintf("; %s is a local socket", unix))
		}
	}
	// go-redis would silently make a cluster client of several plain
	// servers; say what is meant instead.
	if len(s.Servers) > 1 && !s.Cluster && s.SentinelMaster == "" {
		return p.errf(seen["servers"], "%d servers given; more than one needs cluster = yes (seed nodes) or sentinel_master (sentinels)", len(s.Servers))
	}
	if e := seen["tls_ca_file"]; e != nil && !s.TLS {
		return p.errf(e, "needs tls = yes")
	}
	if e := seen["username"]; e != nil && seen["password_file"] == nil {
		return p.errf(e, "needs password_file (Redis authenticates a user name with a password)")
	}
	return nil
}

// isToken accepts printable ASCII without white space or commas: what a
// name or key prefix can be without surprising a later list parser.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return false
		}
	}
	return s != ""
}

func parseDatabase(s string) (int, bool) {
	if !config.AllDigits(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}

// timeUnits are Postfix's time units plus ms, which Postfix lacks but a
// per-operation deadline needs.
var timeUnits = map[string]time.Duration{
	"ms": time.Millisecond,
	"s":  time.Second,
	"m":  time.Minute,
	"h":  time.Hour,
	"d":  24 * time.Hour,
	"w":  7 * 24 * time.Hour,
}

// parseTimeout reads a number and a unit. Unlike config's Postfix time
// parser, a unit is required (a bare "10" meant as milliseconds would be
// ten seconds of stalled mail) and nothing may follow it (Postfix reads
// "10ms" as ten minutes).
func parseTimeout(s string) (time.Duration, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, "is not a time"
	}
	if i == len(s) {
		return 0, "has no unit (ms or s)"
	}
	unit, ok := timeUnits[s[i:]]
	if !ok {
		return 0, "is not a time"
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > int64(MaxTimeout/unit) {
		return 0, fmt.Sprintf("is more than %v", MaxTimeout)
	}
	d := time.Duration(n) * unit
	if d == 0 {
		return 0, "must be more than zero"
	}
	if d > MaxTimeout {
		return 0, fmt.Sprintf("is more than %v", MaxTimeout)
	}
	return d, ""
}

// parseServer checks one address and returns it in the form the rest of
// the program uses: host:port, [ipv6]:port or unix:/path.
func parseServer(s string) (string, string) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return "", "is not unix:/absolute/path"
		}
		return s, ""
	}
	var host, port string
	if rest, ok := strings.CutPrefix(s, "["); ok {
		h, p, ok := strings.Cut(rest, "]:")
		if !ok {
			return "", "is not [ipv6]:port"
		}
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() {
			return "", "is not [ipv6]:port"
		}
		host, port = h, p
	} else {
		h, p, ok := strings.Cut(s, ":")
		if !ok || strings.Contains(p, ":") {
			return "", "is not host:port, [ipv6]:port or unix:/path"
		}
		if !isHostname(h) {
			return "", "is not host:port (bad host name)"
		}
		host, port = h, p
	}
	if !config.AllDigits(port) {
		return "", "has no port number"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "has a port out of range (1-65535)"
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port, ""
	}
	return host + ":" + port, ""
}

// isHostname accepts a DNS name or IPv4 address: dot-separated labels of
// letters, digits, '-' and '_' (which some internal names carry).
func isHostname(h string) bool {
	// 253 characters at most, without the root's final dot.
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// secretError is what goes wrong with a secret file: msg is shown to the
// operator, so it names the file and never its contents.
type secretError struct {
	msg string
	err error
}

// readSecretFile reads a secret by safefile's rule (no symbolic link but
// root's, no FIFO waited on, one link), owned by root or the mail owner,
// with no access for group or others. The permission rule is Postfix's
// for its own secrets, and the link rules keep someone who can write the
// directory from substituting a file of their choice (or a name for
// another file of root's, whose contents would then be sent to Redis as
// a password).
func readSecretFile(path string, mailOwnerUID int) ([]byte, *secretError) {
	rule := safefile.Rule{
		Owners: []int{0, mailOwnerUID},
		Forbid: 0o077,
		Need:   fmt.Sprintf("it must be owned by root or the mail owner (uid %d) and give no access to group or others (e.g. mode 0600)", mailOwnerUID),
	}
	data, err := readByRule(rule, path, maxSecretSize)
	switch {
	case err == errTooLarge:
		return nil, &secretError{fmt.Sprintf("%s is larger than %d bytes", path, maxSecretSize), nil}
	case err != nil:
		return nil, &secretError{err.Error(), err}
	}
	return data, nil
}

// readPassword returns the first line of the password file.
func readPassword(path string, mailOwnerUID int) (string, *secretError) {
	data, serr := readSecretFile(path, mailOwnerUID)
	if serr != nil {
		return "", serr
	}
	defer clear(data)
	line := data
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) == 0 {
		return "", &secretError{fmt.Sprintf("%s: the first line, which holds the password, is empty", path), nil}
	}
	return string(line), nil
}

// readSealKeys parses the seal key file: lines of exactly 64 hex digits,
// blank lines and '#' comments allowed. Messages give line numbers and
// lengths, never a character of a key.
func readSealKeys(path string, mailOwnerUID int) ([][32]byte, *secretError) {
	data, serr := readSecretFile(path, mailOwnerUID)
	if serr != nil {
		return nil, serr
	}
	defer clear(data)
	var keys [][32]byte
	fail := func(format string, args ...any) ([][32]byte, *secretError) {
		for i := range keys {
			clear(keys[i][:])
		}
		return nil, &secretError{fmt.Sprintf(format, args...), nil}
	}
	rest := data
	for lineno := 1; len(rest) > 0; lineno++ {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		line = bytes.TrimFunc(line, func(r rune) bool { return r < 128 && config.IsSpace(byte(r)) })
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var k [32]byte
		if len(line) != 64 {
			return fail("%s, line %d: a key is 64 hex digits, this line has %d characters", path, lineno, len(line))
		}
		if !decodeHex(k[:], line) {
			return fail("%s, line %d: a key is 64 hex digits, this line has other characters", path, lineno)
		}
		if k == ([32]byte{}) {
			return fail("%s, line %d: the key is all zeros; make one with openssl rand -hex 32", path, lineno)
		}
		for i := range keys {
			if keys[i] == k {
				clear(k[:])
				return fail("%s, line %d: the same key as key %d", path, lineno, i+1)
			}
		}
		keys = append(keys, k)
		clear(k[:])
	}
	if len(keys) == 0 {
		return fail("%s has no key; add a line made with openssl rand -hex 32", path)
	}
	return keys, nil
}

// decodeHex is hex.Decode without its error, which quotes the offending
// character: a character of a key.
func decodeHex(dst, src []byte) bool {
	val := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	for i := range dst {
		hi, ok1 := val(src[2*i])
		lo, ok2 := val(src[2*i+1])
		if !ok1 || !ok2 {
			clear(dst)
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

// String describes the settings without the secrets, for logs, and
// without TLSCA's contents (its path is enough).
func (s Settings) String() string {
	pw := "none"
	if s.Password != "" {
		pw = "(set)"
	}
	return fmt.Sprintf("%s: servers=%v sentinel_master=%q cluster=%t database=%d username=%q password=%s tls=%t tls_ca_file=%q timeout=%v key_prefix=%q seal_keys=%d",
		s.Path, s.Servers, s.SentinelMaster, s.Cluster, s.Database, s.Username, pw, s.TLS, s.TLSCAFile, s.Timeout, s.KeyPrefix, len(s.SealKeys))
}

// Format makes every fmt verb (%v, %+v, %#v included) print String, so
// that no careless log line prints the password or the keys.
func (s Settings) Format(f fmt.State, _ rune) {
	io.WriteString(f, s.String())
}

// LogValue does the same for log/slog.
func (s Settings) LogValue() slog.Value {
	return slog.StringValue(s.String())
}

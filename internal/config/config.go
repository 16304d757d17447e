// Package config reads Postfix's main.cf the way Postfix 3.7 to 3.12 do
// and turns the parameters tlsmgr(8) uses into a validated Params.
//
// Values are stored as written and expanded when looked up, so "$name"
// references see the final value of name whatever the order of
// definitions. A name is looked up in, from first to last: values given
// to Set, -o overrides, main.cf, the defaults passed to Load, the
// built-in defaults. Parameters nobody reads are kept only so that they
// can be referenced.
//
// Where this differs from Postfix on purpose:
//   - a CR ending a physical line is dropped, also inside a continued value;
//   - a reference loop (a = $b, b = $a) is reported as such at once, also
//     through a relational operand (which crashes Postfix); expansion work
//     and result size are bounded;
//   - every default can be referenced at any time, where Postfix sees a
//     default only once the program has read that parameter;
//   - two enabled caches of different types on the same file get a warning;
//   - a cache whose non-Berkeley-DB type mapping (Postfix 3.11) fails is
//     kept, with a warning, where Postfix opens a table that fails every
//     request; of non_bdb_custom_mapping, only inline: and static: tables
//     are read;
//   - ${domain_to_ascii{...}} and ${domain_to_utf8{...}} (Postfix 3.11)
//     use golang.org/x/net/idna's UTS #46 processing, not ICU's: the same
//     for names in their usual form, perhaps not for every odd label;
//   - our own size parameters take k, m and g suffixes.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// ValueError is a parameter whose value cannot be used.
type ValueError struct {
	Param  string
	Value  string // expanded, except for expansion errors: then as written
	Kind   string // "time", "numerical", "boolean", "size" or ""
	Reason string // optional detail
}

func (e *ValueError) Error() string {
	kind := ""
	if e.Kind != "" {
		kind = e.Kind + " "
	}
	s := fmt.Sprintf("invalid %svalue %q for parameter %s", kind, e.Value, e.Param)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// ErrUndefined is wrapped by the typed getters for a parameter that has
// neither a value nor a default.
var ErrUndefined = errors.New("parameter is not defined")

// Config is main.cf plus defaults and overrides. It is safe for
// concurrent use.
type Config struct {
	mu       sync.RWMutex
	values   map[string]string // Set, -o and main.cf, as written
	defaults map[string]string
	warnings []string
}

// Load reads dir/main.cf if dir != "" (a missing main.cf is an error
// naming the path), on top of the built-in defaults, with extraDefaults
// (may be nil) replacing built-in defaults, then applies overrides, each
// "name=value" as given to -o (value may be empty; a string without "="
// is an error).
//
// As Postfix does, config_directory defaults to dir when dir is given.
func Load(dir string, extraDefaults map[string]string, overrides []string) (*Config, error) {
	c := &Config{
		values:   make(map[string]string),
		defaults: newDefaults(extraDefaults),
	}
	if dir != "" {
		c.defaults[ParamConfigDirectory] = dir
		path := filepath.Join(dir, "main.cf")
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read main.cf: %w", err)
		}
		warnings, err := parseMainCF(data, path, c.values)
		c.warnings = warnings
		if err != nil {
			return nil, err
		}
	}
	for _, o := range overrides {
		name, value, reason := SplitNameValue(o)
		if reason != "" {
			return nil, fmt.Errorf("invalid -o option %q: %s", o, reason)
		}
		c.values[name] = value
	}
	return c, nil
}

// Set gives name a value (expanded on lookup like any other) that wins
// over main.cf and -o, e.g. the read-only process_name, process_id and
// service_name the daemon fills in.
func (c *Config) Set(name, value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[name] = value
}

// Warnings are what Postfix would log while reading main.cf: overridden
// entries and skipped lines.
func (c *Config) Warnings() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.warnings)
}

// raw returns the unexpanded value; the caller holds c.mu.
func (c *Config) raw(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	if v, ok := c.values[name]; ok {
		return v, true
	}
	v, ok := c.defaults[name]
	return v, ok
}

// Lookup returns the expanded value of name and whether name is defined
// at all. References to undefined parameters expand to nothing, as in
// Postfix; an expansion error names the parameter and its raw value.
func (c *Config) Lookup(name string) (string, bool, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	raw, ok := c.raw(name)
	if !ok {
		return "", false, nil
	}
	v, err := expandValue(c.raw, name, raw)
	if err != nil {
		return "", true, &ValueError{Param: name, Value: raw, Reason: err.Error()}
	}
	return v, true, nil
}

// String is Lookup for callers that treat undefined as empty.
func (c *Config) String(name string) (string, error) {
	v, _, err := c.Lookup(name)
	return v, err
}

// defined is Lookup for the typed getters, which need a value.
func (c *Config) defined(name string) (string, error) {
	v, ok, err := c.Lookup(name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%s: %w", name, ErrUndefined)
	}
	return v, nil
}

// Time reads a Postfix time value: a number and an optional unit s, m,
// h, d or w. A bare number takes the unit of the parameter's default
// (seconds for every parameter we define). See parseTime for the exact
// Postfix rules this follows.
func (c *Config) Time(name string) (time.Duration, error) {
	v, err := c.defined(name)
	if err != nil {
		return 0, err
	}
	unit := byte('s')
	c.mu.RLock()
	if def, ok := c.defaults[name]; ok {
		if d, err := expandValue(c.raw, name, def); err == nil {
			unit = timeUnit(d)
		}
	}
	c.mu.RUnlock()
	secs, ok := parseTime(v, unit)
	if !ok {
		return 0, &ValueError{Param: name, Value: v, Kind: "time"}
	}
	return time.Duration(secs) * time.Second, nil
}

// Int reads a decimal integer (leading white space and a sign allowed,
// as strtol() does for Postfix).
func (c *Config) Int(name string) (int64, error) {
	v, err := c.defined(name)
	if err != nil {
		return 0, err
	}
	n, ok := parseInt(v)
	if !ok {
		return 0, &ValueError{Param: name, Value: v, Kind: "numerical"}
	}
	return n, nil
}

// Bool reads "yes" or "no" in any case.
func (c *Config) Bool(name string) (bool, error) {
	v, err := c.defined(name)
	if err != nil {
		return false, err
	}
	b, ok := ParseBool(v)
	if !ok {
		return false, &ValueError{Param: name, Value: v, Kind: "boolean"}
	}
	return b, nil
}

// Size reads a byte count: digits with an optional k, m or g suffix
// (binary multiples; our extension, Postfix has none).
func (c *Config) Size(name string) (int64, error) {
	v, err := c.defined(name)
	if err != nil {
		return 0, err
	}
	n, ok := parseSize(v)
	if !ok {
		return 0, &ValueError{Param: name, Value: v, Kind: "size"}
	}
	return n, nil
}

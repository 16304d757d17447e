package config

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

const (
	minute = 60
	hour   = 60 * minute
	day    = 24 * hour
	week   = 7 * day
)

// parseTime converts a Postfix time value to seconds, with the rules of
// Postfix's conv_time(): a decimal number as strtol() reads it (leading
// white space and a sign allowed, no digits reads as 0), negative values
// rejected, then ONE unit letter s, m, h, d or w (lower case only) or
// defUnit if the number ends the string. Whatever follows the unit
// letter is ignored, so "1h30m" is one hour and "10sec" ten seconds; the
// result must fit a C int. We match all of this so that every main.cf
// Postfix accepts means the same here.
func parseTime(s string, defUnit byte) (int64, bool) {
	if s == "" {
		return 0, false
	}
	i := 0
	for i < len(s) && IsSpace(s[i]) {
		i++
	}
	j := i
	if j < len(s) && (s[j] == '+' || s[j] == '-') {
		j++
	}
	k := j
	for k < len(s) && s[k] >= '0' && s[k] <= '9' {
		k++
	}
	var n int64
	end := 0 // strtol points back at the start when nothing converts
	if k > j {
		var err error
		if n, err = strconv.ParseInt(s[i:k], 10, 64); err != nil {
			return 0, false
		}
		end = k
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, false
	}
	unit := defUnit
	if end < len(s) {
		unit = s[end]
	}
	// The strict "<" bounds are Postfix's.
	switch unit {
	case 'w':
		if n < math.MaxInt32/week {
			return n * week, true
		}
	case 'd':
		if n < math.MaxInt32/day {
			return n * day, true
		}
	case 'h':
		if n < math.MaxInt32/hour {
			return n * hour, true
		}
	case 'm':
		if n < math.MaxInt32/minute {
			return n * minute, true
		}
	case 's':
		return n, true
	}
	return 0, false
}

// timeUnit is the unit a bare number gets: the first letter of the
// parameter's default value, as Postfix does ("3600s" -> 's').
func timeUnit(def string) byte {
	for i := 0; i < len(def); i++ {
		if c := def[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			return c
		}
	}
	return 's'
}

// parseInt reads a decimal integer as strtol() does for Postfix integer
// parameters: leading white space and a sign are allowed, nothing may
// follow the digits.
func parseInt(s string) (int64, bool) {
	i := 0
	for i < len(s) && IsSpace(s[i]) {
		i++
	}
	n, err := strconv.ParseInt(s[i:], 10, 64)
	return n, err == nil
}

// ParseBool accepts "yes" and "no" in any ASCII case, as Postfix's
// strcasecmp() test (strings.EqualFold would also take Unicode folds).
func ParseBool(s string) (value, ok bool) {
	switch {
	case equalFoldASCII(s, "yes"):
		return true, true
	case equalFoldASCII(s, "no"):
		return false, true
	}
	return false, false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// parseSize reads a byte count: decimal digits with an optional k, m or
// g suffix (any case) for binary multiples. Postfix itself has no size
// suffixes; these are for our own parameters.
func parseSize(s string) (int64, bool) {
	digits, mult := s, int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			digits = s[:n-1]
		}
	}
	if !AllDigits(digits) {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, false
	}
	return n * mult, true
}

// ParseTime reads a Postfix time value, as main.cf's time parameters
// are read (see parseTime); defUnit applies to a bare number.
func ParseTime(s string, defUnit byte) (time.Duration, error) {
	n, ok := parseTime(s, defUnit)
	if !ok {
		return 0, fmt.Errorf("not a Postfix time value: %q", s)
	}
	return time.Duration(n) * time.Second, nil
}

package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits on one expansion. Postfix stops at a nesting depth of about 100;
// it has no bound on work or size, but a handful of parameters that each
// reference the next one twice would otherwise run for ever.
const (
	maxNesting     = 100
	maxReferences  = 100000
	maxExpandedLen = 4 << 20
)

// expander evaluates $name references the way Postfix's mac_expand()
// does for main.cf (recursive mode): a referenced value is itself
// expanded, but the ?/: tests look at the raw value.
type expander struct {
	lookup     func(name string) (string, bool) // raw value
	active     []string                         // parameters being expanded, outermost first
	depth      int
	references int
}

func isNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// expandValue expands the raw value of the parameter name.
func expandValue(lookup func(string) (string, bool), name, raw string) (string, error) {
	e := &expander{lookup: lookup, active: []string{name}}
	var out strings.Builder
	if err := e.text(&out, raw); err != nil {
		return "", err
	}
	return out.String(), nil
}

// text splits s into literal text and macro expressions, as mac_parse().
func (e *expander) text(out *strings.Builder, s string) error {
	for i := 0; i < len(s); {
		if s[i] != '$' {
			j := strings.IndexByte(s[i:], '$')
			if j < 0 {
				j = len(s) - i
			}
			out.WriteString(s[i : i+j])
			i += j
		} else if i+1 < len(s) && s[i+1] == '$' {
			out.WriteByte('$')
			i += 2
		} else {
			i++
			var expr string
			if i < len(s) && (s[i] == '{' || s[i] == '(') {
				// Only the bracket kind that opened the reference nests.
				open, closing := s[i], byte('}')
				if open == '(' {
					closing = ')'
				}
				level, j := 1, i+1
				for ; j < len(s); j++ {
					if s[j] == open {
						level++
					} else if s[j] == closing {
						if level--; level == 0 {
							break
						}
					}
				}
				if level > 0 {
					return fmt.Errorf("truncated macro reference in %q", s)
				}
				expr, i = s[i+1:j], j+1
			} else {
				j := i
				for j < len(s) && isNameChar(s[j]) {
					j++
				}
				expr, i = s[i:j], j
			}
			if expr == "" {
				return fmt.Errorf("empty macro name in %q", s)
			}
			if err := e.expr(out, expr); err != nil {
				return err
			}
		}
		if out.Len() > maxExpandedLen {
			return fmt.Errorf("expansion longer than %d bytes", maxExpandedLen)
		}
	}
	return nil
}

func skipSpace(s string) string {
	for len(s) > 0 && IsSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// leftCurly reports whether s, after white space, starts with '{', and
// returns s from that brace.
func leftCurly(s string) (string, bool) {
	t := skipSpace(s)
	return t, len(t) > 0 && t[0] == '{'
}

// curlyPayload takes s starting with '{' and returns the text up to the
// matching '}' and what follows it, minus leading white space.
func curlyPayload(s string) (payload, rest string, err error) {
	level := 1
	for j := 1; j < len(s); j++ {
		switch s[j] {
		case '{':
			level++
		case '}':
			if level--; level == 0 {
				return s[1:j], skipSpace(s[j+1:]), nil
			}
		}
	}
	return "", "", fmt.Errorf("unbalanced {} in attribute expression: %q", s)
}

// expr evaluates the inside of one $name, ${...} or $(...).
func (e *expander) expr(out *strings.Builder, s string) error {
	e.depth++
	defer func() { e.depth-- }()
	if e.depth > maxNesting {
		return fmt.Errorf("unreasonable macro call nesting: %q", s)
	}
	if e.references++; e.references > maxReferences {
		return fmt.Errorf("more than %d macro references", maxReferences)
	}

	var (
		name    string
		value   string
		defined bool
		op      byte // '?', ':' or 0
		rest    string
	)
	if t, ok := leftCurly(s); ok {
		result, after, err := e.relational(t)
		if err != nil {
			return err
		}
		value, defined, rest = result, true, after
		if rest != "" {
			if rest[0] != '?' && rest[0] != ':' {
				return fmt.Errorf(`"?" or ":" expected at %q`, rest)
			}
			op, rest = rest[0], rest[1:]
		}
	} else {
		t := skipSpace(s)
		for i := 0; ; i++ {
			k := i + (len(t[i:]) - len(skipSpace(t[i:])))
			if k == len(t) {
				name = t[:i]
				break
			}
			if t[k] == '?' || t[k] == ':' {
				name, op, rest = t[:i], t[k], t[k+1:]
				break
			}
			if t[k] == '{' {
				// Postfix 3.11: ${name{text}} calls a function.
				return e.call(out, t[:i], t[k:])
			}
			if !isNameChar(t[i]) {
				return fmt.Errorf("attribute name syntax error at %q", t[i:])
			}
		}
		value, defined = e.lookup(name)
	}
	nonEmpty := defined && value != ""

	switch op {
	case 0:
		if !nonEmpty {
			return nil
		}
		if name == "" { // a relational result is plain text
			return e.text(out, value)
		}
		for _, a := range e.active {
			if a == name {
				return fmt.Errorf("recursive macro reference: %s -> %s",
					strings.Join(e.active, " -> "), name)
			}
		}
		e.active = append(e.active, name)
		err := e.text(out, value)
		e.active = e.active[:len(e.active)-1]
		return err
	case '?':
		// Without braces the text runs to the end, ':' included, as in
		// Postfix 2.x: ${name?a:b} yields "a:b" or nothing.
		ifTrue := rest
		if t, ok := leftCurly(rest); ok {
			var err error
			if ifTrue, rest, err = curlyPayload(t); err != nil {
				return err
			}
		} else {
			rest = ""
		}
		if nonEmpty {
			if err := e.text(out, ifTrue); err != nil {
				return err
			}
		}
		if rest == "" {
			return nil
		}
		if rest[0] != ':' {
			return fmt.Errorf(`":" expected at %q`, rest)
		}
		return e.ifFalse(out, rest[1:], nonEmpty)
	default:
		return e.ifFalse(out, rest, nonEmpty)
	}
}

// call evaluates ${name{text}}: s starts with the '{' after name. The
// text is expanded, trimmed of white space, and given to the function,
// whose result is not expanded again.
func (e *expander) call(out *strings.Builder, name, s string) error {
	text, rest, err := curlyPayload(s)
	if err != nil {
		return err
	}
	if rest != "" {
		return fmt.Errorf("unexpected input at %q", rest)
	}
	fn, ok := mainCFFunctions[name]
	if !ok {
		return fmt.Errorf("unknown function %q", name)
	}
	var arg strings.Builder
	if err := e.text(&arg, trimSpace(text)); err != nil {
		return err
	}
	result, err := fn(arg.String())
	if err != nil {
		return fmt.Errorf("%s{%s}: %w", name, arg.String(), err)
	}
	out.WriteString(result)
	return nil
}

// ifFalse handles the text after ':'.
func (e *expander) ifFalse(out *strings.Builder, rest string, nonEmpty bool) error {
	text := rest
	if t, ok := leftCurly(rest); ok {
		var err error
		if text, rest, err = curlyPayload(t); err != nil {
			return err
		}
	} else {
		rest = ""
	}
	if !nonEmpty {
		if err := e.text(out, text); err != nil {
			return err
		}
	}
	if rest != "" {
		return fmt.Errorf("unexpected input at %q", rest)
	}
	return nil
}

// relational evaluates "{left} op {right}" at the start of s and returns
// "true" or "" and the text after the right operand.
func (e *expander) relational(s string) (result, rest string, err error) {
	left, rest, err := curlyPayload(s)
	if err != nil {
		return "", "", err
	}
	n := 0
	for n < len(rest) && strings.IndexByte("<>!=?+-*/~&|%", rest[n]) >= 0 {
		n++
	}
	op := rest[:n]
	switch op {
	case "==", "!=", "<", "<=", ">=", ">":
	default:
		return "", "", fmt.Errorf(`"==", "!=", "<", "<=", ">=" or ">" expected at %q`, rest)
	}
	rest = rest[n:]
	compare := compareOperands
	// An operator may have a suffix; Postfix (3.6) knows "level", which
	// compares compatibility levels: {$compatibility_level} <level {3.6}.
	if n = 0; n < len(rest) && isAlnumByte(rest[n]) {
		for n < len(rest) && isAlnumByte(rest[n]) {
			n++
		}
		if rest[:n] != "level" {
			return "", "", fmt.Errorf("bad operator suffix at %q", op+rest[:n])
		}
		compare, rest = compareLevels, rest[n:]
	}
	t, ok := leftCurly(rest)
	if !ok {
		return "", "", fmt.Errorf(`"{expression}" expected at %q`, rest)
	}
	right, rest, err := curlyPayload(t)
	if err != nil {
		return "", "", err
	}
	var lv, rv strings.Builder
	if err := e.text(&lv, left); err != nil {
		return "", "", err
	}
	if err := e.text(&rv, right); err != nil {
		return "", "", err
	}
	cmp, err := compare(lv.String(), rv.String())
	if err != nil {
		return "", "", err
	}
	var holds bool
	switch op {
	case "==":
		holds = cmp == 0
	case "!=":
		holds = cmp != 0
	case "<":
		holds = cmp < 0
	case "<=":
		holds = cmp <= 0
	case ">=":
		holds = cmp >= 0
	case ">":
		holds = cmp > 0
	}
	if holds {
		return "true", rest, nil
	}
	return "", rest, nil
}

// AllDigits reports whether s is one or more ASCII decimal digits.
func AllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// compareOperands compares numerically when both sides are all digits,
// else byte-wise, as Postfix does.
func compareOperands(a, b string) (int, error) {
	if !AllDigits(a) || !AllDigits(b) {
		return strings.Compare(a, b), nil
	}
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if err := errors.Join(errA, errB); err != nil {
		return 0, fmt.Errorf("bad number in comparison: %w", err)
	}
	switch {
	case x < y:
		return -1, nil
	case x > y:
		return 1, nil
	}
	return 0, nil
}

func isAlnumByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// compareLevels compares two compatibility levels, "major[.minor[.patch]]".
func compareLevels(a, b string) (int, error) {
	x, errA := compatLevel(a)
	y, errB := compatLevel(b)
	if err := errors.Join(errA, errB); err != nil {
		return 0, err
	}
	return cmpInt64(x, y), nil
}

func cmpInt64(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// compatLevel reads a compatibility level as Postfix's
// compat_level_from_string(): numbers as strtol() reads them, separated
// by '.', the minor and patch numbers at most 1023.
func compatLevel(s string) (int64, error) {
	bad := fmt.Errorf("malformed compatibility level syntax: %q", s)
	var level int64
	rest := s
	for i, shift := range []uint{20, 10, 0} {
		n, after, ok := strtol(rest)
		limit := int64(1023)
		if i == 0 {
			limit = math.MaxInt64 >> 20
		}
		if !ok || n < 0 || n > limit || after != "" && after[0] != '.' || i == 2 && after != "" {
			return 0, bad
		}
		level |= n << shift
		if after == "" {
			return level, nil
		}
		rest = after[1:]
	}
	return 0, bad
}

// strtol reads a decimal number at the start of s as C's strtol(): white
// space, an optional sign, at least one digit, and no overflow.
func strtol(s string) (n int64, rest string, ok bool) {
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
	if k == j {
		return 0, s, false
	}
	n, err := strconv.ParseInt(s[i:k], 10, 64)
	return n, s[k:], err == nil
}

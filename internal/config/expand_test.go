package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// expandTestConfig is a Config over a fixed set of values.
func expandTestConfig(t *testing.T, values map[string]string) *Config {
	t.Helper()
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range values {
		c.Set(k, v)
	}
	return c
}

var expandValues = map[string]string{
	"e":      "",
	"ref":    "$e", // non-empty as written, empty once expanded
	"non":    "x",
	"two":    "2",
	"ten":    "10",
	"a_b":    "AB",
	"chain1": "[$chain2]",
	"chain2": "<${chain3}>",
	"chain3": "$(non)",
	"dollar": "$$HOME",
	"cond":   "${non?{yes}:{no}}",
	"idn":    "münchen.de",
	"compat": "3.10",
}

func TestExpand(t *testing.T) {
	// Results checked against Postfix 3.7's "postconf -x" where the
	// forms differ from the obvious reading.
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"$non", "x"},
		{"${non}", "x"},
		{"$(non)", "x"},
		{"<$non>", "<x>"},
		{"$non.x", "x.x"},     // '.' ends a bare name
		{"$non-$non", "x-x"},  // so does '-'
		{"$a_b", "AB"},        // '_' does not
		{"$non_x", ""},        // undefined: empty
		{"${undefined}", ""},  // undefined: empty
		{"${ non }", "x"},     // white space around the name
		{"${ }", ""},          // nothing named: undefined
		{"$$", "$"},           // $$ is a literal $
		{"$$non", "$non"},     // and is not expanded further
		{"a$$$non", "a$x"},    // $$ then $non
		{"$dollar", "$HOME"},  // $$ in a referenced value
		{"$chain1", "[<x>]"},  // references nest
		{"$cond", "yes"},      // a referenced value may be conditional
		{"${non?yes}", "yes"}, // ? with a non-empty value
		{"${e?yes}", ""},      // ? with an empty value
		{"${undefined?yes}", ""},
		{"${non:no}", ""},
		{"${e:no}", "no"},
		{"${undefined:no}", "no"},
		{"${ref?yes}", "yes"},   // the test looks at the value as written
		{"${ref:no}", ""},       // likewise
		{"${non?x:y}", "x:y"},   // unbraced text runs to the end (2.x form)
		{"${e?x:y}", ""},        // ...so there is no "else"
		{"${e:x:y}", "x:y"},     // same for ':'
		{"${non? pre}", " pre"}, // unbraced text keeps its white space
		{"${non?{yes}:{no}}", "yes"},
		{"${e?{yes}:{no}}", "no"},
		{"${undefined?{yes}:{no}}", "no"},
		{"${ e ? {on} : {off} }", "off"}, // white space around braces
		{"${non?  {x} }", "x"},
		{"${non?{a}:b:c}", "a"},
		{"${e?{a}:b:c}", "b:c"}, // unbraced else runs to the end
		{"${e:{fallback}}", "fallback"},
		{"${non?$non-$non}", "x-x"},             // texts are expanded
		{"${non?{${e:{inner}}}:{no}}", "inner"}, // nested conditionals
		{"${e?{no}:{${non?{deep}}}}", "deep"},
		{"${non?{a{b}c}}", "a{b}c"}, // braces balance in texts
		{"$(non?(x))", "(x)"},       // $(..) nests only ()
		{"$(non?{x})", "x"},
		{"${e?{$undefined}:{$$}}", "$"},
		// Relational forms.
		{"${{abc} == {abc}}", "true"},
		{"${{abc} != {abc}}", ""},
		{"${{1} < {10} ? {lt} : {ge}}", "lt"},
		{"${{$two} < {$ten}?{lt}:{ge}}", "lt"}, // numeric: both all digits
		{"${{b} < {10}?{lt}:{ge}}", "ge"},      // else byte-wise
		{"${{2} <= {2}?{le}}", "le"},
		{"${{3} >= {2}?{ge}}", "ge"},
		{"${{3} > {20}?{gt}:{le}}", "le"},
		{"${{$non}=={x}?{same}}", "same"},
		{"${{$e} == {}:{empty}}", ""}, // true is non-empty, so ':' gives nothing
		{"${{$e} != {}:{empty}}", "empty"},
		// Postfix 3.6's compatibility level operators.
		{"${{$compat} <level {3.9}?{old}:{new}}", "new"}, // by string, "3.10" < "3.9"
		{"${{$compat} >=level {3.10.0}?{new}}", "new"},
		{"${{3.6} ==level {3.6.0}}", "true"},
		{"${{2} <level {3.6}}", "true"},
		{"${{3.6.1} >level {3.6}}", "true"},
		{"${{ 3. 6} ==level {+3.6}}", "true"}, // strtol() skips white space, takes a sign
		{"${{3.11} !=level {3.11}:{same}}", "same"},
		{"${{3.11} <=level {3.10}:{newer}}", "newer"},
		// Postfix 3.11's functions.
		{"${domain_to_ascii{$non}}", "x"},
		{"${domain_to_ascii{Some.Name}}", "Some.Name"}, // ASCII is left alone
		{"${domain_to_ascii{$$non}}", "$non"},          // the result is not expanded
		{"${domain_to_ascii{ bücher.example }}", "xn--bcher-kva.example"},
		{"${domain_to_ascii {BÜCHER.Example}}", "xn--bcher-kva.example"},
		{"${domain_to_ascii{$idn}}", "xn--mnchen-3ya.de"},
		{"${domain_to_ascii{日本語。example}}", "xn--wgv71a119e.example"},
		{"${domain_to_ascii{}}", ""},
		{"$(domain_to_ascii{$idn})", "xn--mnchen-3ya.de"},
		{"${domain_to_utf8{xn--bcher-kva.example}}", "bücher.example"},
		{"${domain_to_utf8{XN--MNCHEN-3YA.De}}", "münchen.de"},
		{"${domain_to_utf8{Example.COM}}", "example.com"},
		{"${domain_to_utf8{xn--Bcher-kva.example}}", "bücher.example"},
		{"${domain_to_utf8{xn--bcher-kva.123}}", "bücher.123"}, // not all digits
		{"${domain_to_utf8{$idn}}", "münchen.de"},              // non-ASCII is left alone
		{"${non?{${domain_to_ascii{$idn}}}}", "xn--mnchen-3ya.de"},
	}
	c := expandTestConfig(t, expandValues)
	for _, tt := range tests {
		c.Set("subject", tt.in)
		got, ok, err := c.Lookup("subject")
		if err != nil || !ok || got != tt.want {
			t.Errorf("expand %q = %q, %v, %v; want %q", tt.in, got, ok, err, tt.want)
		}
	}
}

func TestExpandSyntaxErrors(t *testing.T) {
	tests := []struct{ in, reason string }{
		{"x$", "empty macro name"},
		{"$", "empty macro name"},
		{"x$-", "empty macro name"},
		{"$ x", "empty macro name"},
		{"${}", "empty macro name"},
		{"$()", "empty macro name"},
		{"${non", "truncated macro reference"},
		{"$(non", "truncated macro reference"},
		{"${non?{x}", "truncated macro reference"},
		{"${a b}", "attribute name syntax error"},
		{"${a.b}", "attribute name syntax error"},
		{"$(non${e})", "attribute name syntax error"},
		{"${non?{x}y}", `":" expected`},
		{"${non?{x}:{y}z}", "unexpected input"},
		{"${non:{x}?y}", "unexpected input"},
		{"$(non?{x)", "unbalanced {}"},
		{"${{1} <> {10}?{a}}", "expected"},
		{"${{1}}", "expected"},
		{"${{1} == 2}", `"{expression}" expected`},
		{"${{1} == {2} x}", `"?" or ":" expected`},
		{"${{1} == {99999999999999999999}}", "bad number"},
		{"${{3.6} <lvl {3.7}}", "bad operator suffix"},
		{"${{3.6} < level {3.7}}", `"{expression}" expected`},
		{"${{3.x} <level {3.7}}", "malformed compatibility level"},
		{"${{3.6} <level {3.1024}}", "malformed compatibility level"},
		{"${{3.6.1.1} <level {3.7}}", "malformed compatibility level"},
		{"${{} ==level {3.7}}", "malformed compatibility level"},
		{"${{-1} <level {3.7}}", "malformed compatibility level"},
		{"${no_such_function{x}}", `unknown function "no_such_function"`},
		{"${domain_to_ascii{x}y}", "unexpected input"},
		{"${domain_to_ascii{x}?{y}}", "unexpected input"},
		{"${domain_to_ascii{x}", "truncated macro reference"},
		{"${domain_to_ascii{bü cher.example}}", "malformed ASCII label"},
		{"${domain_to_ascii{bücher..example}}", "malformed ASCII label"},
		{"${domain_to_ascii{-bücher.example}}", "cannot convert domain"},
		{"${domain_to_ascii{bücher.ab--c}}", "cannot convert domain"},
		{"${domain_to_utf8{}}", "cannot convert domain"},
		{"${domain_to_utf8{xn--bcher-kva..example}}", "malformed ASCII label"},
		{"${domain_to_utf8{xn--abc-.example}}", "cannot convert domain"}, // decodes to ASCII
		{"${domain_to_utf8{xn--bcher-kv!.example}}", "cannot convert domain"},
		{"${domain_to_utf8{123}}", "malformed ASCII label"}, // all digits
		// Errors inside the branch taken are found...
		{"${non?{$}}", "empty macro name"},
	}
	c := expandTestConfig(t, expandValues)
	for _, tt := range tests {
		c.Set("subject", tt.in)
		_, _, err := c.Lookup("subject")
		var ve *ValueError
		if !errors.As(err, &ve) {
			t.Errorf("expand %q: error %v, want a ValueError", tt.in, err)
			continue
		}
		if ve.Param != "subject" || ve.Value != tt.in || !strings.Contains(ve.Reason, tt.reason) {
			t.Errorf("expand %q: %v; want reason containing %q", tt.in, err, tt.reason)
		}
		if msg := err.Error(); !strings.Contains(msg, "subject") || !strings.Contains(msg, fmt.Sprintf("%q", tt.in)) {
			t.Errorf("expand %q: message %q does not name parameter and value", tt.in, msg)
		}
	}
	// ...but, as in Postfix, not those in the branch not taken.
	c.Set("subject", "${e?{$}:{ok}}")
	if got, _, err := c.Lookup("subject"); err != nil || got != "ok" {
		t.Errorf("untaken branch: %q, %v", got, err)
	}
}

func TestExpandRecursion(t *testing.T) {
	c := expandTestConfig(t, map[string]string{
		"a":    "$b",
		"b":    "x${c}",
		"c":    "$a",
		"self": "<$self>",
		// A test is not a use: this is not a loop.
		"test": "${test?{set}}",
		// A relational operand is a use.
		"rel": "${{$rel} == {}}",
		// Used twice side by side is fine.
		"twice": "$non$non",
		"non":   "x",
	})
	for _, tt := range []struct{ name, chain string }{
		{"a", "a -> b -> c -> a"},
		{"b", "b -> c -> a -> b"},
		{"self", "self -> self"},
		{"rel", "rel -> rel"},
	} {
		_, _, err := c.Lookup(tt.name)
		if err == nil || !strings.Contains(err.Error(), "recursive macro reference: "+tt.chain) ||
			!strings.Contains(err.Error(), "parameter "+tt.name) {
			t.Errorf("Lookup(%s) error = %v; want the loop %s", tt.name, err, tt.chain)
		}
	}
	if v, _, err := c.Lookup("test"); err != nil || v != "set" {
		t.Errorf("test = %q, %v", v, err)
	}
	if v, _, err := c.Lookup("twice"); err != nil || v != "xx" {
		t.Errorf("twice = %q, %v", v, err)
	}
	// The typed getters pass the error on.
	if _, err := c.Time("a"); err == nil || !strings.Contains(err.Error(), "recursive") {
		t.Errorf("Time(a) error = %v", err)
	}
}

func TestExpandLimits(t *testing.T) {
	values := map[string]string{}
	const chain = 150
	for i := range chain {
		values[fmt.Sprintf("p%d", i)] = fmt.Sprintf("$p%d", i+1)
	}
	values[fmt.Sprintf("p%d", chain)] = "end"
	c := expandTestConfig(t, values)
	if v, _, err := c.Lookup(fmt.Sprintf("p%d", chain-50)); err != nil || v != "end" {
		t.Errorf("50 nested references: %q, %v", v, err)
	}
	if _, _, err := c.Lookup("p0"); err == nil || !strings.Contains(err.Error(), "nesting") {
		t.Errorf("150 nested references: error %v, want a nesting error", err)
	}

	// Each level doubles the work: without a bound this would not end.
	values = map[string]string{"q40": "x"}
	for i := range 40 {
		values[fmt.Sprintf("q%d", i)] = fmt.Sprintf("$q%d$q%d", i+1, i+1)
	}
	c = expandTestConfig(t, values)
	start := time.Now()
	if _, _, err := c.Lookup("q0"); err == nil {
		t.Error("exponential expansion succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("exponential expansion took %v", d)
	}
}

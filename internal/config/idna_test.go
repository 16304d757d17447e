package config

import (
	"strings"
	"testing"
)

func TestDomainConversion(t *testing.T) {
	// RFC 3492 encodings, as Python's "punycode" codec gives them.
	tests := []struct{ in, out string }{
		{"bücher.example", "xn--bcher-kva.example"},
		{"MÜNCHEN.example", "xn--mnchen-3ya.example"},
		{"中国.example", "xn--fiqs8s.example"},
		{"日本語.jp", "xn--wgv71a119e.jp"},
		{"résumé.example", "xn--rsum-bpad.example"},
		{"aü.example", "xn--a-eha.example"},
	}
	for _, tt := range tests {
		if got, err := mainCFFunctions["domain_to_ascii"](tt.in); err != nil || got != tt.out {
			t.Errorf("domain_to_ascii(%q) = %q, %v; want %q", tt.in, got, err, tt.out)
		}
		want := strings.ToLower(tt.in)
		if got, err := mainCFFunctions["domain_to_utf8"](tt.out); err != nil || got != want {
			t.Errorf("domain_to_utf8(%q) = %q, %v; want %q", tt.out, got, err, want)
		}
	}
	// Passed through unchanged, as Postfix does.
	if got, _ := mainCFFunctions["domain_to_ascii"]("Plain.Example"); got != "Plain.Example" {
		t.Errorf("an ASCII name was changed: %q", got)
	}
	if got, _ := mainCFFunctions["domain_to_utf8"]("bücher"); got != "bücher" {
		t.Errorf("a UTF-8 name was changed: %q", got)
	}
	for _, bad := range []string{"xn--bcher-kv.example", "xn--99999999999.example", "a b.example"} {
		if got, err := domainToUTF8(bad); err == nil {
			t.Errorf("domain_to_utf8(%q) = %q, want an error", bad, got)
		}
	}
	for _, bad := range []string{"ü..example", "-ü.example", "ü\xff.example"} {
		if got, err := domainToASCII(bad); err == nil {
			t.Errorf("domain_to_ascii(%q) = %q, want an error", bad, got)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for name, want := range map[string]bool{
		"example.org": true, "a_b.example": true, "xn--bcher-kva.example": true, "1.2.3.a": true,
		"": false, "1.2.3.4": false, "a..b": false, "a.": false, ".a": false, "-a.b": false, "a-.b": false,
		"a b": false, "a$b": false,
		"a234567890123456789012345678901234567890123456789012345678901234.b": false,
	} {
		if got := validHostname(name); got != want {
			t.Errorf("validHostname(%q) = %v", name, got)
		}
	}
}

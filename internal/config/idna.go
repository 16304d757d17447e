package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// The main.cf functions ${domain_to_ascii{name}} and
// ${domain_to_utf8{name}} of Postfix 3.11 (mac_midna.c). Postfix passes
// an ASCII name to domain_to_ascii and a non-ASCII one to domain_to_utf8
// through unchanged; it converts the others with ICU's UTS #46 code
// (non-transitional) and requires the ASCII form to pass
// valid_hostname(). golang.org/x/net/idna implements the same UTS #46
// processing.

var mainCFFunctions = map[string]func(string) (string, error){
	"domain_to_ascii": func(name string) (string, error) {
		if isASCII(name) {
			return name, nil
		}
		return domainToASCII(name)
	},
	"domain_to_utf8": func(name string) (string, error) {
		if !isASCII(name) {
			return name, nil
		}
		return domainToUTF8(name)
	},
}

// uts46 maps and checks as for a DNS lookup, non-transitional as ICU is
// used by Postfix; the host name rules are Postfix's own (validHostname),
// which allow '_'.
var uts46 = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.StrictDomainName(false),
	idna.CheckHyphens(true), idna.BidiRule(), idna.ValidateLabels(true))

// domainToASCII converts an internationalized domain name to its
// A-label form.
func domainToASCII(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("cannot convert domain %q to ASCII: malformed UTF-8", name)
	}
	a, err := uts46.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("cannot convert domain %q to ASCII: %v", name, err)
	}
	if !validHostname(a) {
		return "", fmt.Errorf("cannot convert domain %q to ASCII: malformed ASCII label(s)", name)
	}
	return a, nil
}

// domainToUTF8 converts an ASCII domain name, A-labels included, to its
// UTF-8 form, which must convert back.
func domainToUTF8(name string) (string, error) {
	u, err := uts46.ToUnicode(strings.ToLower(name))
	if err == nil && u == "" {
		err = errors.New("empty name")
	}
	if err != nil {
		return "", fmt.Errorf("cannot convert domain %q to UTF-8: %v", name, err)
	}
	if _, err := domainToASCII(u); err != nil {
		return "", err
	}
	return u, nil
}

// validHostname is Postfix's valid_hostname(): labels of letters, digits,
// '-' and '_' of at most 63 bytes, no empty label, no '-' at either end
// of a label, not all digits, at most 255 bytes.
func validHostname(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	numeric := true
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-':
				numeric = false
			default:
				return false
			}
		}
	}
	return !numeric
}

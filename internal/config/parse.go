package config

import (
	"bytes"
	"fmt"
	"strings"
)

// SyntaxError is a main.cf line that is not "name = value".
type SyntaxError struct {
	File   string
	Line   int // first physical line of the logical line
	Reason string
	Text   string // the logical line
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s, line %d: %s: %q", e.File, e.Line, e.Reason, e.Text)
}

// IsSpace is C's isspace() in the C locale, which is what Postfix uses
// for main.cf syntax. Other files in main.cf syntax (the fleet's Redis
// settings) use it too.
func IsSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && IsSpace(s[i]) {
		i++
	}
	for j > i && IsSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

// SplitNameValue splits "name = value" as Postfix does for main.cf lines
// and -o options: the name ends at white space or '=', the value is
// trimmed and may be empty. The result is a reason on failure. Other
// files in main.cf syntax (the fleet's Redis settings) use it too.
func SplitNameValue(line string) (name, value, reason string) {
	i := 0
	for i < len(line) && IsSpace(line[i]) {
		i++
	}
	if i == len(line) || line[i] == '=' {
		return "", "", "missing attribute name"
	}
	j := i
	for j < len(line) && !IsSpace(line[j]) && line[j] != '=' {
		j++
	}
	name = line[i:j]
	for j < len(line) && IsSpace(line[j]) {
		j++
	}
	if j == len(line) || line[j] != '=' {
		return "", "", "missing '=' after attribute name"
	}
	return name, trimSpace(line[j+1:]), ""
}

// LogicalLine is one "name = value" text joined from its physical lines,
// numbered by its first.
type LogicalLine struct {
	Text string
	Line int
}

// LogicalLines groups physical lines as Postfix's readllines() does.
// Lines that are empty, all white space, or whose first non-space byte
// is '#' are dropped without ending the logical line in progress; a line
// starting with white space is appended verbatim (leading white space
// included, no separator). A logical line that itself starts with white
// space has no line to continue: it is returned in orphans (its first
// physical line; what would continue it is skipped), for the caller to
// warn about or refuse.
func LogicalLines(data []byte) (lines, orphans []LogicalLine) {
	var cur strings.Builder
	curLine := 0
	orphan := false // inside a logical line that began with white space
	first := ""     // its first physical line
	flush := func() {
		switch {
		case orphan:
			orphans = append(orphans, LogicalLine{Text: first, Line: curLine})
		case cur.Len() > 0:
			lines = append(lines, LogicalLine{Text: cur.String(), Line: curLine})
		}
		cur.Reset()
		orphan = false
	}
	lineno := 0
	for len(data) > 0 {
		var phys []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			phys, data = data[:i], data[i+1:]
		} else {
			phys, data = data, nil
		}
		lineno++
		// Deliberate difference: Postfix keeps a CR that ends a physical
		// line inside a continued value; we treat CRLF as a line end.
		phys = bytes.TrimSuffix(phys, []byte{'\r'})
		k := 0
		for k < len(phys) && IsSpace(phys[k]) {
			k++
		}
		if k == len(phys) || phys[k] == '#' {
			continue
		}
		if k > 0 && (cur.Len() > 0 || orphan) {
			cur.Write(phys)
			continue
		}
		flush()
		orphan, first = k > 0, string(phys)
		curLine = lineno
		cur.Write(phys)
	}
	flush()
	return lines, orphans
}

// splitLogicalLines is LogicalLines with Postfix's warning for each
// orphan, which is then skipped.
func splitLogicalLines(data []byte, file string) ([]LogicalLine, []string) {
	lines, orphans := LogicalLines(data)
	var warnings []string
	for _, o := range orphans {
		text := o.Text
		if len(text) > 30 {
			text = text[:30] + "..."
		}
		warnings = append(warnings, fmt.Sprintf("%s, line %d: logical line must not start with white space: %q", file, o.Line, text))
	}
	return lines, warnings
}

// parseMainCF reads main.cf text into values (later lines win). It
// returns the warnings Postfix would log and the first syntax error.
func parseMainCF(data []byte, file string, values map[string]string) (warnings []string, err error) {
	lines, warnings := splitLogicalLines(data, file)
	for _, l := range lines {
		if i := strings.IndexByte(l.Text, 0); i >= 0 {
			// Postfix reads the line as a C string, up to the null
			// byte; 3.9 and later say so.
			warnings = append(warnings, fmt.Sprintf("%s, line %d: text after null byte may be ignored", file, l.Line))
			l.Text = l.Text[:i]
		}
		name, value, reason := SplitNameValue(l.Text)
		if reason != "" {
			return warnings, &SyntaxError{File: file, Line: l.Line, Reason: reason, Text: l.Text}
		}
		if old, ok := values[name]; ok && old != value {
			warnings = append(warnings, fmt.Sprintf("%s, line %d: overriding earlier entry: %s=%s",
				file, l.Line, name, old))
		}
		values[name] = value
	}
	return warnings, nil
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeMainCF makes a configuration directory holding text as main.cf.
func writeMainCF(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustLoad(t *testing.T, text string, overrides ...string) *Config {
	t.Helper()
	c, err := Load(writeMainCF(t, text), nil, overrides)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// rawValue is the stored, unexpanded value.
func rawValue(c *Config, name string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.raw(name)
}

func TestSplitNameValue(t *testing.T) {
	tests := []struct {
		in, name, value, reason string
	}{
		{in: "a=b", name: "a", value: "b"},
		{in: "a = b", name: "a", value: "b"},
		{in: "a\t=\tb c \t", name: "a", value: "b c"},
		{in: "  a  =  b", name: "a", value: "b"},
		{in: "a=", name: "a", value: ""},
		{in: "a =   ", name: "a", value: ""},
		{in: "a==b", name: "a", value: "=b"},
		{in: "a = b = c", name: "a", value: "b = c"},
		{in: "a.b-c = x", name: "a.b-c", value: "x"},
		{in: "=b", reason: "missing attribute name"},
		{in: "  = b", reason: "missing attribute name"},
		{in: "", reason: "missing attribute name"},
		{in: "a", reason: "missing '=' after attribute name"},
		{in: "a b = c", reason: "missing '=' after attribute name"},
	}
	for _, tt := range tests {
		name, value, reason := SplitNameValue(tt.in)
		if name != tt.name || value != tt.value || reason != tt.reason {
			t.Errorf("SplitNameValue(%q) = %q, %q, %q; want %q, %q, %q",
				tt.in, name, value, reason, tt.name, tt.value, tt.reason)
		}
	}
}

func TestSyntax(t *testing.T) {
	tests := []struct {
		name, text string
		want       map[string]string
	}{
		{"spaces optional", "a=1\nb = 2\nc\t=\t3\t \n", map[string]string{"a": "1", "b": "2", "c": "3"}},
		{"empty value", "a =\nb=\n", map[string]string{"a": "", "b": ""}},
		// The continuation's leading white space is kept; nothing else
		// is inserted between the lines.
		{"continuation", "a = x\n  y\n\tz\nb = 2", map[string]string{"a": "x  y\tz", "b": "2"}},
		{"continuation of empty value", "a =\n    PATH=/bin\n    ddd\n", map[string]string{"a": "PATH=/bin    ddd"}},
		{"comments", "# c\n  # indented\na = 1 # not a comment\n#b = 2\n", map[string]string{"a": "1 # not a comment"}},
		{"comment inside continuation", "a = x\n# c\n  # c\n  y\n", map[string]string{"a": "x  y"}},
		{"blank lines inside continuation", "a = x\n\n   \n\t\n  y\n", map[string]string{"a": "x  y"}},
		{"CRLF", "a = 1\r\nb = 2 \r\n  more\r\n\r\n", map[string]string{"a": "1", "b": "2   more"}},
		{"no final newline", "a = 1\nb = 2", map[string]string{"a": "1", "b": "2"}},
		{"later wins", "a = 1\nb = x\na = 2\n", map[string]string{"a": "2", "b": "x"}},
		{"unknown names kept", "no_such_parameter_at_all = $data_directory/x\n",
			map[string]string{"no_such_parameter_at_all": "$data_directory/x"}},
		{"name alone on its line", "a\n  = 1\n", map[string]string{"a": "1"}},
		{"empty file", "", map[string]string{}},
		{"only comments", "# a\n\n#b=c\n", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			values := map[string]string{}
			if _, err := parseMainCF([]byte(tt.text), "main.cf", values); err != nil {
				t.Fatal(err)
			}
			if len(values) != len(tt.want) {
				t.Errorf("got %d entries %q, want %q", len(values), values, tt.want)
			}
			for k, v := range tt.want {
				if values[k] != v {
					t.Errorf("%s = %q, want %q", k, values[k], v)
				}
			}
		})
	}
}

func TestSyntaxWarnings(t *testing.T) {
	text := "  orphan = 1\n  more\na = 1\na = 1\na = 2\n"
	values := map[string]string{}
	warnings, err := parseMainCF([]byte(text), "/x/main.cf", values)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := values["orphan"]; ok {
		t.Error("a logical line starting with white space was not skipped")
	}
	if values["a"] != "2" {
		t.Errorf("a = %q, want 2", values["a"])
	}
	want := []string{
		`/x/main.cf, line 1: logical line must not start with white space: "  orphan = 1"`,
		// Redefining with the same value is not worth a warning.
		`/x/main.cf, line 5: overriding earlier entry: a=1`,
	}
	if strings.Join(warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(want, "\n"))
	}

	dir := writeMainCF(t, text)
	c, err := Load(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Warnings(); len(got) != 2 || !strings.Contains(got[1], filepath.Join(dir, "main.cf")) {
		t.Errorf("Config.Warnings() = %q", got)
	}
}

func TestNullByte(t *testing.T) {
	text := "a = x\x00y\nb = 1\n  2\x00 3\n  4\nc = 5\n"
	values := map[string]string{}
	warnings, err := parseMainCF([]byte(text), "/x/main.cf", values)
	if err != nil {
		t.Fatal(err)
	}
	if values["a"] != "x" || values["b"] != "1  2" || values["c"] != "5" {
		t.Errorf("values %q", values)
	}
	want := "/x/main.cf, line 1: text after null byte may be ignored\n" +
		"/x/main.cf, line 2: text after null byte may be ignored"
	if got := strings.Join(warnings, "\n"); got != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, want)
	}
	// Nothing left of the name: as Postfix, a syntax error.
	if _, err := parseMainCF([]byte("\x00a = 1\n"), "/x/main.cf", values); err == nil {
		t.Error("a line that starts with a null byte was accepted")
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		text   string
		line   int
		reason string
		logic  string
	}{
		{"a = 1\nbogus line\n", 2, "missing '=' after attribute name", "bogus line"},
		{"a = 1\n= 2\n", 2, "missing attribute name", "= 2"},
		// The error names the first line of a continued logical line.
		{"# c\n\nbad\n  stuff\n", 3, "missing '=' after attribute name", "bad  stuff"},
		{"a = 1\nb\n  c\n", 2, "missing '=' after attribute name", "b  c"},
	}
	for _, tt := range tests {
		dir := writeMainCF(t, tt.text)
		_, err := Load(dir, nil, nil)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v is not a SyntaxError", tt.text, err)
			continue
		}
		path := filepath.Join(dir, "main.cf")
		if se.File != path || se.Line != tt.line || se.Reason != tt.reason || se.Text != tt.logic {
			t.Errorf("%q: got %+v", tt.text, se)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, path+", line ") {
			t.Errorf("%q: message %q does not name file and line", tt.text, msg)
		}
	}
}

package config

import "testing"

func TestParseTime(t *testing.T) {
	good := []struct {
		in   string
		unit byte
		want int64
	}{
		{"0", 's', 0},
		{"10", 's', 10},
		{"10", 'h', 36000}, // a bare number takes the default's unit
		{"10s", 's', 10},
		{"5m", 's', 300},
		{"2h", 's', 7200},
		{"1d", 's', 86400},
		{"1w", 's', 604800},
		{"3600s", 's', 3600},
		{"+5m", 's', 300},
		{" 7", 's', 7},
		{"-0", 's', 0},
		// Postfix reads one unit letter and ignores the rest.
		{"1h30m", 's', 3600},
		{"10sec", 's', 10},
		{"2weeks", 's', 1209600},
		// No digits reads as zero, as with strtol().
		{"s", 's', 0},
		{"h", 's', 0},
		{"soon", 's', 0},
		// Bounds: the result must fit a C int.
		{"2147483647", 's', 2147483647},
		{"2147483647s", 's', 2147483647},
		{"35791393m", 's', 35791393 * 60},
		{"596522h", 's', 596522 * 3600},
		{"24854d", 's', 24854 * 86400},
		{"3549w", 's', 3549 * 604800},
	}
	for _, tt := range good {
		got, ok := parseTime(tt.in, tt.unit)
		if !ok || got != tt.want {
			t.Errorf("parseTime(%q, %c) = %d, %v; want %d", tt.in, tt.unit, got, ok, tt.want)
		}
	}
	bad := []string{
		"", "-1", "-1s", "1x", "5S", "5M", "1.5h", "5 s", " s", "-s", "+", "abc", "0x10",
		"2147483648", "99999999999999999999", "35791394m", "596523h", "24855d", "3550w",
	}
	for _, in := range bad {
		if got, ok := parseTime(in, 's'); ok {
			t.Errorf("parseTime(%q) = %d, want failure", in, got)
		}
	}
}

func TestTimeUnit(t *testing.T) {
	for in, want := range map[string]byte{"3600s": 's', "1h": 'h', "10": 's', "": 's', "1w": 'w'} {
		if got := timeUnit(in); got != want {
			t.Errorf("timeUnit(%q) = %c, want %c", in, got, want)
		}
	}
}

func TestParseInt(t *testing.T) {
	good := map[string]int64{"0": 0, "32": 32, "+5": 5, "-5": -5, " 12": 12, "007": 7,
		"9223372036854775807": 9223372036854775807}
	for in, want := range good {
		if got, ok := parseInt(in); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", " ", "1x", "0x10", "1_000", "12 ", "1e3", "9223372036854775808", "--1"} {
		if got, ok := parseInt(in); ok {
			t.Errorf("parseInt(%q) = %d, want failure", in, got)
		}
	}
}

func TestParseBool(t *testing.T) {
	good := map[string]bool{"yes": true, "YES": true, "Yes": true, "no": false, "NO": false, "nO": false}
	for in, want := range good {
		if got, ok := ParseBool(in); !ok || got != want {
			t.Errorf("ParseBool(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	// Postfix's strcasecmp() knows no Unicode folding ("ſ" folds to "s").
	for _, in := range []string{"", "true", "false", "1", "0", "y", "n", "yes ", "ye\u017f", "on"} {
		if got, ok := ParseBool(in); ok {
			t.Errorf("ParseBool(%q) = %v, want failure", in, got)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1": 1, "65536": 65536, "1k": 1024, "1K": 1024, "128m": 134217728,
		"128M": 134217728, "2g": 2 << 30, "2G": 2 << 30,
		"9223372036854775807": 9223372036854775807, "8589934591g": 8589934591 << 30,
	}
	for in, want := range good {
		if got, ok := parseSize(in); !ok || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "+1", " 1", "1 k", "1kb", "1t", "1.5m", "8589934592g", "9223372036854775808"} {
		if got, ok := parseSize(in); ok {
			t.Errorf("parseSize(%q) = %d, want failure", in, got)
		}
	}
}

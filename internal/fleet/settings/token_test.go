package settings

import (
	"strconv"
	"testing"
)

// Names and the key prefix are printable ASCII: DEL, control characters
// and bytes beyond ASCII are refused, as white space and commas are.
func TestTokenCharacters(t *testing.T) {
	f := newFixture(t)
	what := map[string]string{
		"sentinel_master": "a master name",
		"username":        "a user name",
		"key_prefix":      "a key prefix",
	}
	for setting, desc := range what {
		for _, v := range []string{"a\x7fb", "\x7f", "a\x01b", "a\x1bb", "tlsmgr:\x80", "\xff", "caf\u00e9", "a,b"} {
			text := "servers = r:1\n" + setting + " = " + v + "\npassword_file = @PW@\nseal_key_file = @KEY@\n"
			want := "@DIR@/tlsmgr-redis.cf, line 2: " + setting + ": " + strconv.Quote(v) + " is not " + desc + " (printable characters, no white space or commas)"
			if got := f.loadErr(t, text); got != want {
				t.Errorf("%s = %q:\n got %s\nwant %s", setting, v, got, want)
			}
		}
		// The printable range, ends included.
		v := "!~" + setting
		text := "servers = r:1\n" + setting + " = " + v + "\npassword_file = @PW@\nseal_key_file = @KEY@\n"
		s := f.load(t, text)
		if got := map[string]string{"sentinel_master": s.SentinelMaster, "username": s.Username, "key_prefix": s.KeyPrefix}[setting]; got != v {
			t.Errorf("%s = %q refused or lost: %v", setting, v, s)
		}
	}
}

package settings

import (
	"strconv"
	"testing"
)

// A timeout whose count of units overflows a time.Duration is refused as
// too long, never wrapped around to a short deadline: each of these is,
// in nanoseconds modulo 2^64, between 0 and 10s.
func TestTimeoutOverflow(t *testing.T) {
	f := newFixture(t)
	for _, v := range []string{
		"18446744073710ms", // 2^64 ns + 448384 ns
		"18446744074s",     // 2^64 ns + 290ms
		"2152120142m",      // 7 * 2^64 ns + 4.03s
		"1111928740h",
		"616385997d",
		"616385997w",
		"9223372036854775807ms",
	} {
		got := f.loadErr(t, "servers = r:1\ntimeout = "+v+"\nseal_key_file = @KEY@\n")
		if want := "@DIR@/tlsmgr-redis.cf, line 2: timeout: " + strconv.Quote(v) + " is more than 10s"; got != want {
			t.Errorf("%s:\n got %s\nwant %s", v, got, want)
		}
	}
}

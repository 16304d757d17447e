package settings

import (
	"math"
	"strconv"
	"testing"
)

// database takes any number from 0 to 2^31-1.
func TestDatabaseRange(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{0, 1, 15, 16, math.MaxInt32 - 1, math.MaxInt32} {
		s := f.load(t, "servers = r:1\ndatabase = "+strconv.Itoa(n)+"\nseal_key_file = @KEY@\n")
		if s.Database != n {
			t.Errorf("database = %d: got %d", n, s.Database)
		}
	}
	for _, v := range []string{"2147483648", "4294967296", "9223372036854775807", "9223372036854775808", "+1", "1e3", "0x10"} {
		got := f.loadErr(t, "servers = r:1\ndatabase = "+v+"\nseal_key_file = @KEY@\n")
		if want := "@DIR@/tlsmgr-redis.cf, line 2: database: " + strconv.Quote(v) + " is not a database number (an integer from 0)"; got != want {
			t.Errorf("database = %s:\n got %s\nwant %s", v, got, want)
		}
	}
}

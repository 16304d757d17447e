package settings

import (
	"strings"
	"testing"
)

// A host name's labels are at most 63 characters and the name at most 253
// (RFC 1035).
func TestServerHostNameLengths(t *testing.T) {
	f := newFixture(t)
	label := func(n int) string { return strings.Repeat("a", n) }
	// 253 characters: three labels of 63 and their dots, then one of 61.
	long := strings.Repeat(label(63)+".", 3)
	long += strings.Repeat("b", 253-len(long))
	// The root's final dot does not count.
	for _, h := range []string{label(63), label(63) + ".example.com", "x." + label(63), long, long + "."} {
		s := f.load(t, "servers = "+h+":6379\nseal_key_file = @KEY@\n")
		if len(s.Servers) != 1 || s.Servers[0] != h+":6379" {
			t.Errorf("%d characters: %q", len(h), s.Servers)
		}
	}
	for _, h := range []string{label(64), label(64) + ".example.com", "x." + label(64), "x." + label(64) + ".", long + "b", long + "b."} {
		got := f.loadErr(t, "servers = "+h+":6379\nseal_key_file = @KEY@\n")
		if want := "@DIR@/tlsmgr-redis.cf, line 1: servers: \"" + h + ":6379\" is not host:port (bad host name)"; got != want {
			t.Errorf("%d characters:\n got %s\nwant %s", len(h), got, want)
		}
	}
}

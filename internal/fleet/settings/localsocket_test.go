package settings

import "testing"

// A local socket refuses TLS only when TLS is on: "tls = no" beside it is
// what the default says, and is accepted.
func TestLocalSocketWithTLSOff(t *testing.T) {
	f := newFixture(t)
	for _, text := range []string{
		"servers = unix:/run/redis/r.sock\ntls = no\nseal_key_file = @KEY@\n",
		"tls = NO\nservers = unix:/run/redis/r.sock\nseal_key_file = @KEY@\n",
		"servers = unix:/run/redis/r.sock\ncluster = no\nseal_key_file = @KEY@\n",
	} {
		s := f.load(t, text)
		if s.TLS || s.Cluster || len(s.Servers) != 1 || s.Servers[0] != "unix:/run/redis/r.sock" {
			t.Errorf("%q: got %v", text, s)
		}
	}
}

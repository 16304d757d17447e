package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// get runs GET with a deadline, as the code under test will.
func get(c redis.Cmdable, key string, d time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Get(ctx, key).Result()
}

func set(t *testing.T, c redis.Cmdable, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, key, val, 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
}

func wantGet(t *testing.T, c redis.Cmdable, key, want string) {
	t.Helper()
	got, err := get(c, key, 5*time.Second)
	if err != nil || got != want {
		t.Fatalf("GET %s = %q, %v; want %q", key, got, err, want)
	}
}

// wantTimeout checks that GET fails by its deadline while a server is paused.
func wantTimeout(t *testing.T, c redis.Cmdable, key string) {
	t.Helper()
	start := time.Now()
	_, err := get(c, key, 20*time.Millisecond)
	var ne net.Error
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("GET %s on a paused server: %v, want a timeout", key, err)
	}
	t.Logf("GET %s on a paused server failed after %v: %v", key, time.Since(start), err)
}

func client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true})
}

func TestSingle(t *testing.T) {
	start := time.Now()
	s := Single(t)
	t.Logf("single up in %v at %s", time.Since(start), s.Addr)
	c := client(s.Addr)
	defer c.Close()
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")

	s.Pause()
	wantTimeout(t, c, "k")
	s.Resume()
	wantGet(t, c, "k", "v")

	s.Stop()
	if _, err := get(c, "k", time.Second); err == nil {
		t.Fatal("GET on a stopped server succeeded")
	}
	addr := s.Addr
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr)
	}
	// Nothing is persisted: the restarted server is empty.
	if _, err := get(c, "k", 5*time.Second); err != redis.Nil {
		t.Fatalf("GET after restart: %v, want redis.Nil", err)
	}
	set(t, c, "k", "w")
	wantGet(t, c, "k", "w")
}

func TestSingleWithConfig(t *testing.T) {
	s := Single(t, WithConfig("requirepass s3cret"))
	c := client(s.Addr)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING without the password succeeded")
	}
	ca := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "s3cret", DisableIdentity: true})
	defer ca.Close()
	set(t, ca, "k", "v")
}

func TestSingleTLS(t *testing.T) {
	s := SingleTLS(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: s.TLS, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	plain := client(s.Addr)
	defer plain.Close()
	if _, err := get(plain, "k", time.Second); err == nil {
		t.Fatal("plain-text GET on the TLS port succeeded")
	}
}

func TestSentinel(t *testing.T) {
	start := time.Now()
	st := Sentinel(t)
	t.Logf("sentinel set-up up in %v: master %s, replica %s, sentinels %v", time.Since(start), st.Master.Addr, st.Replica.Addr, st.Addrs)
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: st.MasterName, SentinelAddrs: st.Addrs,
		MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
	})
	defer c.Close()
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	// Paused far shorter than down-after-milliseconds: no failover.
	st.Master.Pause()
	wantTimeout(t, c, "k")
	st.Master.Resume()
	wantGet(t, c, "k", "v")

	old := st.Master
	promoted := st.Replica
	old.Stop()
	start = time.Now()
	st.WaitFailover()
	t.Logf("failover took %v", time.Since(start))
	if st.Master != promoted || st.Replica != old {
		t.Fatal("WaitFailover did not swap the roles")
	}
	// The replica had the key before it was promoted; writes now go to it.
	d := redis.NewClient(&redis.Options{Addr: st.Master.Addr, DisableIdentity: true})
	defer d.Close()
	wantGet(t, d, "k", "v")
	set(t, d, "k2", "v2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := get(c, "k2", time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failover client never followed the failover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantGet(t, c, "k2", "v2")
}

func TestCluster(t *testing.T) {
	start := time.Now()
	cl := Cluster(t)
	t.Logf("cluster up in %v: %v", time.Since(start), cl.Addrs)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true})
	defer c.Close()

	// One key per node, checked against the node itself.
	keys := map[*Server]string{}
	for i := 0; len(keys) < 3; i++ {
		k := fmt.Sprintf("key-%d", i)
		if _, ok := keys[cl.NodeFor(k)]; !ok {
			keys[cl.NodeFor(k)] = k
		}
	}
	for n, k := range keys {
		set(t, c, k, n.Addr)
		d := client(n.Addr)
		wantGet(t, d, k, n.Addr)
		d.Close()
	}

	paused := cl.Nodes[1]
	paused.Pause()
	wantTimeout(t, c, keys[paused])
	for n, k := range keys {
		if n != paused {
			wantGet(t, c, k, n.Addr)
		}
	}
	paused.Resume()
	wantGet(t, c, keys[paused], paused.Addr)

	// A restarted node keeps its identity and slots (nodes.conf in its
	// directory) and rejoins; its data is gone, nothing being persisted.
	stopped := cl.Nodes[2]
	stopped.Stop()
	stopped.Restart()
	cl.WaitOK()
	if _, err := get(c, keys[stopped], 5*time.Second); err != redis.Nil {
		t.Fatalf("GET on the restarted node: %v, want redis.Nil", err)
	}
	set(t, c, keys[stopped], "again")
	wantGet(t, c, keys[stopped], "again")
}

func TestKeySlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT.
	for key, want := range map[string]int{"foo": 12182, "bar": 5061, "{user1000}.following": 3443, "{}x": 10595, "": 0, "a{b}c{d}": 3300} {
		if got := KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// The flavour check tells each server from the others, as INFO server
// reports them (the first lines of the real replies).
func TestFlavourCheck(t *testing.T) {
	infos := map[string]string{
		"redis 6.0.16":   "# Server\r\nredis_version:6.0.16\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n",
		"redis 7.0.15":   "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n",
		"redis 8.0.2":    "# Server\r\nredis_version:8.0.2\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n",
		"valkey 8.1.1":   "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\nvalkey_release_stage:ga\r\n",
		"valkey as 8.0":  "# Server\r\nredis_version:8.0.2\r\nserver_name:valkey\r\nvalkey_version:9.0.0\r\n",
		"no version":     "# Server\r\nredis_mode:standalone\r\n",
		"redis 6.0 only": "redis_version:6.0\r\n",
	}
	want := map[string]map[string]string{ // flavour: info: report ("" = rejected)
		"host":           {"redis 6.0.16": "redis 6.0.16", "redis 7.0.15": "redis 7.0.15", "redis 8.0.2": "redis 8.0.2", "redis 6.0 only": "redis 6.0"},
		"bullseye-redis": {"redis 6.0.16": "redis 6.0.16"},
		"trixie-redis":   {"redis 8.0.2": "redis 8.0.2"},
		"trixie-valkey":  {"valkey 8.1.1": "valkey 8.1.1"},
	}
	for _, f := range Flavours {
		for name, info := range infos {
			got, err := f.checkInfo(info)
			if w := want[f.Name][name]; got != w || (err == nil) != (w != "") {
				t.Errorf("%s checking %s: %q, %v; want %q", f.Name, name, got, err, w)
			}
		}
	}
	if _, err := LookupFlavour("trixie-keydb"); err == nil {
		t.Error("LookupFlavour accepted an unknown name")
	}
	if f, err := LookupFlavour(""); err != nil || f.Name != "host" || f.Root() != "" {
		t.Errorf(`LookupFlavour("") = %+v, %v; want the host's`, f, err)
	}
}

// The server started is the flavour TLSMGR_REDIS chose, and its files are
// where that flavour's servers keep them: in its root's /tmp, gone after
// the test.
func TestFlavourInUse(t *testing.T) {
	f, err := SelectedFlavour()
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	t.Run(f.Name, func(t *testing.T) {
		s := Single(t)
		dir = s.Dir
		info, err := s.Client(t).Info(context.Background(), "server").Result()
		if err != nil {
			t.Fatal(err)
		}
		report, err := f.checkInfo(info)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s in %s", f.Name, report, s.Dir)
		if root := f.Root(); root != "" {
			if !strings.HasPrefix(s.Dir, filepath.Join(root, "tmp")+"/") {
				t.Errorf("server directory %s is not in %s/tmp", s.Dir, root)
			}
			if _, err := os.Stat(s.confPath()); err != nil {
				t.Error(err)
			}
		}
	})
	if f.Root() != "" {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", dir, err)
		}
	}
}

package redistest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// FlavourEnv names the environment variable that chooses the server every
// Server of the test binary runs: one of the Flavours' names. Unset or
// empty, it is the host's redis-server.
const FlavourEnv = "TLSMGR_REDIS"

// Flavour is a server build the harness can run: the host's redis-server,
// or a server of another Debian release, run by chroot in the root that
// scripts/debian-root makes for that release (which shares the host's
// network, so the server listens on the host's loopback as the host's
// does). Inside a root, a server's directory, configuration and log are
// under the root's /tmp (Server.Dir is that directory as the host sees
// it), removed when the test ends.
type Flavour struct {
	Name  string // FlavourEnv's value: "host", "bullseye-redis", ...
	Suite string // Debian suite of the root; "" for the host's server
	// Binary is the server program: looked up in the host's PATH, or an
	// absolute path inside the root. Sentinels are the same program with
	// --sentinel.
	Binary string
	// Product and Series are what the server must report in INFO server:
	// Product's "<product>_version" field ("redis_version",
	// "valkey_version") starting with Series and a dot. A Redis flavour
	// must also report no valkey_version. Series "" (the host's) takes any
	// version.
	Product, Series string
	// ClusterPort is whether the server has the cluster-port setting
	// (Redis 7.0 and later); without it, a node's cluster bus is its port
	// plus 10000.
	ClusterPort bool
}

// Flavours are the servers the fleet tests run against: the host's
// (Debian 12: Redis 7.0), Debian 11's Redis 6.0, Debian 13's Redis 8.0 and
// Debian 13's Valkey 8.1 (Redis 7.2-compatible, which Debian 13 and many
// other distributions ship instead of Redis). Valkey's package has no
// redis-server name (that is valkey-redis-compat, not installed): the
// binary is valkey-server.
var Flavours = []Flavour{
	{Name: "host", Binary: "redis-server", Product: "redis", ClusterPort: true},
	{Name: "bullseye-redis", Suite: "bullseye", Binary: "/usr/bin/redis-server", Product: "redis", Series: "6.0"},
	{Name: "trixie-redis", Suite: "trixie", Binary: "/usr/bin/redis-server", Product: "redis", Series: "8.0", ClusterPort: true},
	{Name: "trixie-valkey", Suite: "trixie", Binary: "/usr/bin/valkey-server", Product: "valkey", Series: "8.1", ClusterPort: true},
}

// LookupFlavour returns the flavour of that name ("" is the host's).
func LookupFlavour(name string) (Flavour, error) {
	if name == "" {
		name = "host"
	}
	var names []string
	for _, f := range Flavours {
		if f.Name == name {
			return f, nil
		}
		names = append(names, f.Name)
	}
	return Flavour{}, fmt.Errorf("redistest: unknown %s=%q (one of %s)", FlavourEnv, name, strings.Join(names, ", "))
}

// SelectedFlavour returns the flavour FlavourEnv names.
func SelectedFlavour() (Flavour, error) {
	return LookupFlavour(os.Getenv(FlavourEnv))
}

// RootsDir is where scripts/debian-root keeps its roots: $TLSMGR_ROOTS,
// or /var/cache/tlsmgr-roots.
func RootsDir() string {
	if d := os.Getenv("TLSMGR_ROOTS"); d != "" {
		return d
	}
	return "/var/cache/tlsmgr-roots"
}

// Root is the flavour's root directory; "" for the host's.
func (f Flavour) Root() string {
	if f.Suite == "" {
		return ""
	}
	return filepath.Join(RootsDir(), f.Suite)
}

var (
	flavourOnce sync.Once
	flavour     Flavour
	flavourErr  error // the environment's fault: unknown name
	flavourMiss string
)

// selected returns the flavour of this test binary, stopping the test if
// the name is unknown (always a failure) or the flavour cannot run here
// (testenv.Missing: a skip by hand, a failure in CI).
func selected(t testing.TB) Flavour {
	t.Helper()
	flavourOnce.Do(func() {
		flavour, flavourErr = SelectedFlavour()
		if flavourErr == nil {
			flavourMiss = flavour.Unavailable()
		}
	})
	if flavourErr != nil {
		t.Fatal(flavourErr)
	}
	if flavourMiss != "" {
		testenv.Missing(t, flavourMiss)
	}
	return flavour
}

// Unavailable says what this machine lacks to run the flavour (root, the
// root directory, its binary, its mounts), or "" if nothing.
func (f Flavour) Unavailable() string {
	if f.Suite == "" {
		if _, err := exec.LookPath(f.Binary); err != nil {
			return f.Binary
		}
		return ""
	}
	root := f.Root()
	how := " (scripts/debian-root " + f.Suite + " builds and mounts it)"
	if os.Geteuid() != 0 {
		return "root, to chroot into " + root
	}
	if _, err := os.Stat(filepath.Join(root, ".tlsmgr-root")); err != nil {
		return "the " + f.Suite + " root " + root + how
	}
	if st, err := os.Stat(filepath.Join(root, f.Binary)); err != nil || st.IsDir() {
		return f.Binary + " in " + root + how
	}
	// The servers read /dev/urandom and /dev/null; /proc for their
	// memory figures. debian-root mounts both.
	if st, err := os.Stat(filepath.Join(root, "dev", "null")); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return "/dev mounted in " + root + how
	}
	if _, err := os.Stat(filepath.Join(root, "proc", "self")); err != nil {
		return "/proc mounted in " + root + how
	}
	return ""
}

// checkServer asks the server started as f what it is (INFO server); see
// checkInfo.
func (f Flavour) checkServer(ctx context.Context, c *redis.Client) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("INFO server: %w", err)
	}
	return f.checkInfo(info)
}

// checkInfo returns an error unless INFO server's reply info is of f's
// product and series; the report is "redis 6.0.16" or "valkey 8.1.1".
func (f Flavour) checkInfo(info string) (string, error) {
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			fields[k] = v
		}
	}
	v := fields[f.Product+"_version"]
	report := f.Product + " " + v
	switch {
	case v == "":
		return "", fmt.Errorf("INFO server has no %s_version; flavour %s wants %s %s:\n%s", f.Product, f.Name, f.Product, f.Series, info)
	case f.Series != "" && !strings.HasPrefix(v, f.Series+"."):
		return "", fmt.Errorf("the server is %s; flavour %s wants %s %s", report, f.Name, f.Product, f.Series)
	case f.Product == "redis" && fields["valkey_version"] != "":
		return "", fmt.Errorf("the server is valkey %s; flavour %s wants Redis", fields["valkey_version"], f.Name)
	}
	return report, nil
}

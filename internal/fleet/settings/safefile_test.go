package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
)

// Every file Load reads goes through safefile's rule: a link planted by
// another account than root, a FIFO or a directory in its place is
// refused, a link of root's followed.
func TestFilesAreOpenedSafely(t *testing.T) {
	f := newFixture(t)
	// loadWith loads a settings file of text, in which @FILE@ is the file
	// under test. It runs in a goroutine of its own: no t.Fatal.
	loadWith := func(text, file string) error {
		path := filepath.Join(t.TempDir(), "tlsmgr-redis.cf")
		text = strings.NewReplacer("@FILE@", file, "@PW@", f.pwFile, "@KEY@", f.keyFile).Replace(text)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
		if err := os.Chmod(path, 0o644); err != nil {
			return err
		}
		_, err := Load(path, f.owner)
		return err
	}
	secret := func(content string) func(*testing.T, string) {
		return func(t *testing.T, path string) { writeFile(t, path, content, 0o600) }
	}
	for _, c := range []struct {
		name string
		safefiletest.Class
	}{
		{"settings file", safefiletest.Class{
			Make: func(t *testing.T, path string) {
				writeFile(t, path, "servers = r:1\nseal_key_file = "+f.keyFile+"\n", 0o644)
			},
			Use: func(path string) error { _, err := Load(path, f.owner); return err },
		}},
		{"password_file", safefiletest.Class{
			Make: secret(password + "\n"),
			Use: func(path string) error {
				return loadWith("servers = r:1\npassword_file = @FILE@\nseal_key_file = @KEY@\n", path)
			},
		}},
		{"seal_key_file", safefiletest.Class{
			Make: secret(keyAHex + "\n"),
			Use:  func(path string) error { return loadWith("servers = r:1\nseal_key_file = @FILE@\n", path) },
		}},
		{"tls_ca_file", safefiletest.Class{
			Make: func(t *testing.T, path string) { writeFile(t, path, "not checked here\n", 0o644) },
			Use: func(path string) error {
				return loadWith("servers = r:1\ntls = yes\ntls_ca_file = @FILE@\nseal_key_file = @KEY@\n", path)
			},
		}},
	} {
		t.Run(c.name, func(t *testing.T) { safefiletest.Run(t, c.Class) })
	}
}

// tls_ca_file says which server gets the password: like the settings
// file, it must be root's (or the daemon's own account's) and writable by
// nobody else.
func TestCAFileOwnerAndMode(t *testing.T) {
	f := newFixture(t)
	if _, err := readCAFile(f.caFile); err != nil {
		t.Fatal(err)
	}
	os.Chmod(f.caFile, 0o664)
	got := f.loadErr(t, "servers = r:1\ntls = yes\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n")
	if want := "@DIR@/tlsmgr-redis.cf, line 3: tls_ca_file: refusing to use @DIR@/ca.pem: it is owned by uid"; !strings.HasPrefix(got, want) ||
		!strings.Contains(got, "with mode 0664; it says which server is trusted with the password, so it must be owned by root") {
		t.Errorf("group-writable CA file: %s", got)
	}
}

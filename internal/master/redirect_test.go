package master

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDataRedirectOwnedDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prng_exch")
	got, warnings := DataRedirectFile(path, "/var/lib/postfix", "postfix", os.Geteuid())
	if got != path || warnings != nil {
		t.Errorf("owned directory redirected: %q %q", got, warnings)
	}
	// A missing parent directory is not redirected either.
	missing := filepath.Join(dir, "no", "such", "file")
	if got, warnings := DataRedirectFile(missing, "/var/lib/postfix", "postfix", os.Geteuid()+1); got != missing || warnings != nil {
		t.Errorf("missing directory redirected: %q %q", got, warnings)
	}
}

func TestDataRedirectForeignDirectory(t *testing.T) {
	dir := t.TempDir() // owned by us, so foreign to any other uid
	path := filepath.Join(dir, "prng_exch")
	got, warnings := DataRedirectFile(path, "/var/lib/postfix", "postfix", os.Geteuid()+1)
	if got != "/var/lib/postfix/prng_exch" {
		t.Errorf("redirected to %q", got)
	}
	want := []string{
		"request to update file " + path + " in non-postfix directory " + dir,
		"redirecting the request to postfix-owned data_directory /var/lib/postfix",
	}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings\n got %q\nwant %q", warnings, want)
	}
}

// As Postfix's mail owner would see it: a directory chowned to the mail
// owner is used as is; root's directory is not.
func TestDataRedirectChowned(t *testing.T) {
	requireRoot(t)
	uid, gid := unprivilegedUser(t)
	owned := filepath.Join(t.TempDir(), "owned")
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, uid, gid); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(owned, "smtpd_scache.db")
	if got, warnings := DataRedirectFile(path, "/data", ownerName(uid), uid); got != path || warnings != nil {
		t.Errorf("mail-owner directory redirected: %q %q", got, warnings)
	}
	rootPath := filepath.Join(t.TempDir(), "smtpd_scache.db")
	got, warnings := DataRedirectFile(rootPath, "/data", ownerName(uid), uid)
	if got != "/data/smtpd_scache.db" || len(warnings) != 2 {
		t.Errorf("root directory not redirected: %q %q", got, warnings)
	}
	name := ownerName(uid)
	if want := "redirecting the request to " + name + "-owned data_directory /data"; len(warnings) == 2 && warnings[1] != want {
		t.Errorf("warning %q, want %q", warnings[1], want)
	}
}

func TestDataRedirectMap(t *testing.T) {
	dir := t.TempDir()
	spec := "btree:" + dir + "/smtpd_scache"
	got, warnings := DataRedirectMap(spec, "/var/lib/postfix", "postfix", os.Geteuid()+1)
	if got != "btree:/var/lib/postfix/smtpd_scache" {
		t.Errorf("redirected to %q", got)
	}
	want := []string{
		"request to update table " + spec + " in non-postfix directory " + dir,
		"redirecting the request to postfix-owned data_directory /var/lib/postfix",
	}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings\n got %q\nwant %q", warnings, want)
	}
	for _, spec := range []string{"ldap:" + dir + "/x", "proxy:btree:" + dir + "/x", dir + "/x"} {
		if got, warnings := DataRedirectMap(spec, "/d", "postfix", os.Geteuid()+1); got != spec || warnings != nil {
			t.Errorf("DataRedirectMap(%q) = %q, %q; want unchanged", spec, got, warnings)
		}
	}
	if got, _ := DataRedirectMap("lmdb:"+dir+"/x", "/d", "postfix", os.Geteuid()); got != "lmdb:"+dir+"/x" {
		t.Errorf("owned lmdb table redirected to %q", got)
	}
}

func TestDirAndBaseName(t *testing.T) {
	for _, c := range []struct{ in, dir, base string }{
		{"", ".", "."},
		{"file", ".", "file"},
		{"/", "/", "/"},
		{"///", "/", "/"},
		{"/file", "/", "file"},
		{"//file", "/", "file"},
		{"/a/b", "/a", "b"},
		{"/a//b//", "/a", "b"},
		{"a/b", "a", "b"},
	} {
		if got := dirName(c.in); got != c.dir {
			t.Errorf("dirName(%q) = %q, want %q", c.in, got, c.dir)
		}
		if got := baseName(c.in); got != c.base {
			t.Errorf("baseName(%q) = %q, want %q", c.in, got, c.base)
		}
	}
}

package settings

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tls_ca_file is read once, by Load: TLSCA holds the bytes read from the
// checked file, and what becomes of the file afterwards (replaced by
// another, made unsafe, removed) does not reach them. redisconn builds
// its pool from TLSCA (its TestTLSConfigUsesLoadedCA).
func TestCAFileReadOnce(t *testing.T) {
	f := newFixture(t)
	const first = "-----the CA read at start-up-----\n"
	writeFile(t, f.caFile, first, 0o644)
	s := f.load(t, "servers = r:1\ntls = yes\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n")
	if s.TLSCAFile != f.caFile || string(s.TLSCA) != first {
		t.Fatalf("TLSCAFile %q, TLSCA %q; want %q, %q", s.TLSCAFile, s.TLSCA, f.caFile, first)
	}

	// Another file renamed over it, group-writable: Load would refuse it.
	other := filepath.Join(f.dir, "other.pem")
	writeFile(t, other, "-----someone else's CA-----\n", 0o664)
	if err := os.Rename(other, f.caFile); err != nil {
		t.Fatal(err)
	}
	if string(s.TLSCA) != first {
		t.Errorf("after the file was replaced, TLSCA is %q", s.TLSCA)
	}
	if err := os.Remove(f.caFile); err != nil {
		t.Fatal(err)
	}
	if string(s.TLSCA) != first {
		t.Errorf("after the file was removed, TLSCA is %q", s.TLSCA)
	}

	// Without tls_ca_file there are no bytes.
	if s := f.load(t, "servers = r:1\ntls = yes\nseal_key_file = @KEY@\n"); s.TLSCAFile != "" || s.TLSCA != nil {
		t.Errorf("without tls_ca_file: TLSCAFile %q, TLSCA %q", s.TLSCAFile, s.TLSCA)
	}
}

// The CA file's contents are no secret, but up to 16 MB of them in a log
// line would bury it: printing the settings shows the path only.
func TestPrintingHidesCA(t *testing.T) {
	f := newFixture(t)
	const marker = "CA-CONTENTS-NOT-FOR-THE-LOG"
	writeFile(t, f.caFile, "-----BEGIN CERTIFICATE-----\n"+marker+"\n-----END CERTIFICATE-----\n", 0o644)
	s := f.load(t, "servers = r:1\ntls = yes\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n")
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("loaded", "settings", s, "value", *s)
	hexMarker := fmt.Sprintf("%x", marker)
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v %x", *s, *s, *s, *s), logged.String(),
	} {
		if strings.Contains(out, marker) || strings.Contains(out, hexMarker) || strings.Contains(out, "BEGIN CERTIFICATE") {
			t.Errorf("printed settings show the CA file's contents: %s", out)
		}
		if !strings.Contains(out, "tls_ca_file=") || !strings.Contains(out, "ca.pem") {
			t.Errorf("settings not described: %s", out)
		}
	}
}

// Each file has its size limit, and each says so in its own words: a file
// at the limit is read whole, one byte more is refused.
func TestFileSizeLimits(t *testing.T) {
	f := newFixture(t)
	const caText = "servers = r:1\ntls = yes\ntls_ca_file = @CA@\nseal_key_file = @KEY@\n"
	writeFile(t, f.caFile, strings.Repeat("#", maxCASize), 0o644)
	if s := f.load(t, caText); len(s.TLSCA) != maxCASize {
		t.Errorf("a CA file of %d bytes: read %d", maxCASize, len(s.TLSCA))
	}
	writeFile(t, f.caFile, strings.Repeat("#", maxCASize+1), 0o644)
	got := f.loadErr(t, caText)
	if want := fmt.Sprintf("@DIR@/tlsmgr-redis.cf, line 3: tls_ca_file: @DIR@/ca.pem is larger than %d bytes; is this the right file?", maxCASize); got != want {
		t.Errorf("CA file too large:\n got %s\nwant %s", got, want)
	}

	const pwText = "servers = r:1\nusername = u\npassword_file = @PW@\nseal_key_file = @KEY@\n"
	writeFile(t, f.pwFile, password+"\n"+strings.Repeat("#", maxSecretSize-len(password)-1), 0o600)
	if s := f.load(t, pwText); s.Password != password {
		t.Errorf("a password file of %d bytes: password not read", maxSecretSize)
	}
	writeFile(t, f.pwFile, password+"\n"+strings.Repeat("#", maxSecretSize-len(password)), 0o600)
	got = f.loadErr(t, pwText)
	if want := fmt.Sprintf("@DIR@/tlsmgr-redis.cf, line 3: password_file: @DIR@/redis.pw is larger than %d bytes", maxSecretSize); got != want {
		t.Errorf("password file too large:\n got %s\nwant %s", got, want)
	}
}

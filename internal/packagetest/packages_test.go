package packagetest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// repo is the source tree, from this package's directory.
const repo = "../.."

const (
	name       = "tlsmgr-go"
	maintainer = "tlsmgr-go maintainers <tlsmgr-go@users.noreply.github.com>"
	homepage   = "https://github.com/gotlsmgr/tlsmgr"
	summary    = "TLS session cache and PRNG manager for Postfix, in Go"
)

// A family is where a distribution family's packages put what differs.
type family struct {
	format      string // deb, rpm
	daemon      string // the daemon, in Postfix's daemon_directory
	unit        string // the systemd unit
	environment string // the unit's defaults file
}

var (
	debian = family{"deb", "/usr/lib/postfix/sbin/tlsmgr-go", "/lib/systemd/system/tlsmgr-go.service", "/etc/default/tlsmgr-go"}
	redhat = family{"rpm", "/usr/libexec/postfix/tlsmgr-go", "/usr/lib/systemd/system/tlsmgr-go.service", "/etc/sysconfig/tlsmgr-go"}
)

// An arch is a Go architecture the packages are built for, with RPM's
// name for it and the ELF machine of its programs.
type arch struct {
	goarch, rpm string
	machine     elf.Machine
}

var arches = []arch{{"amd64", "x86_64", elf.EM_X86_64}, {"arm64", "aarch64", elf.EM_AARCH64}}

// debContents is what dpkg-deb -c lists: mode, owner, path.
var debContents = []string{
	"drwxr-xr-x root/root ./etc/",
	"drwxr-xr-x root/root ./etc/default/",
	"-rw-r--r-- root/root ./etc/default/tlsmgr-go",
	"drwxr-xr-x root/root ./lib/",
	"drwxr-xr-x root/root ./lib/systemd/",
	"drwxr-xr-x root/root ./lib/systemd/system/",
	"-rw-r--r-- root/root ./lib/systemd/system/tlsmgr-go.service",
	"drwxr-xr-x root/root ./usr/",
	"drwxr-xr-x root/root ./usr/lib/",
	"drwxr-xr-x root/root ./usr/lib/postfix/",
	"drwxr-xr-x root/root ./usr/lib/postfix/sbin/",
	"-rwxr-xr-x root/root ./usr/lib/postfix/sbin/tlsmgr-go",
	"drwxr-xr-x root/root ./usr/sbin/",
	"-rwxr-xr-x root/root ./usr/sbin/tlsmgrctl",
	"drwxr-xr-x root/root ./usr/share/",
	"drwxr-xr-x root/root ./usr/share/doc/",
	"drwxr-xr-x root/root ./usr/share/doc/tlsmgr-go/",
	"-rw-r--r-- root/root ./usr/share/doc/tlsmgr-go/CHANGELOG.md",
	"-rw-r--r-- root/root ./usr/share/doc/tlsmgr-go/LICENSE",
	"-rw-r--r-- root/root ./usr/share/doc/tlsmgr-go/README.md",
	"-rw-r--r-- root/root ./usr/share/doc/tlsmgr-go/changelog.gz",
	"-rw-r--r-- root/root ./usr/share/doc/tlsmgr-go/copyright",
	"drwxr-xr-x root/root ./usr/share/lintian/",
	"drwxr-xr-x root/root ./usr/share/lintian/overrides/",
	"-rw-r--r-- root/root ./usr/share/lintian/overrides/tlsmgr-go",
	"drwxr-xr-x root/root ./usr/share/man/",
	"drwxr-xr-x root/root ./usr/share/man/man1/",
	"-rw-r--r-- root/root ./usr/share/man/man1/tlsmgrctl.1.gz",
	"drwxr-xr-x root/root ./usr/share/man/man8/",
	"-rw-r--r-- root/root ./usr/share/man/man8/tlsmgr-go.8.gz",
}

// rpmContents is what rpm lists: mode, owner, the flags (c config,
// n noreplace, d doc, l license; - none), path. rpmFile maps each file to
// the same file in the deb of the same architecture, or to "unit", the
// one that differs: contrib/tlsmgr-go.service with RPM's paths.
var (
	rpmContents = []string{
		"-rw-r--r-- root/root cn /etc/sysconfig/tlsmgr-go",
		"-rw-r--r-- root/root - /usr/lib/systemd/system/tlsmgr-go.service",
		"-rwxr-xr-x root/root - /usr/libexec/postfix/tlsmgr-go",
		"-rwxr-xr-x root/root - /usr/sbin/tlsmgrctl",
		"drwxr-xr-x root/root - /usr/share/doc/tlsmgr-go",
		"-rw-r--r-- root/root d /usr/share/doc/tlsmgr-go/CHANGELOG.md",
		"-rw-r--r-- root/root d /usr/share/doc/tlsmgr-go/README.md",
		"drwxr-xr-x root/root - /usr/share/licenses/tlsmgr-go",
		"-rw-r--r-- root/root l /usr/share/licenses/tlsmgr-go/LICENSE",
		"-rw-r--r-- root/root - /usr/share/man/man1/tlsmgrctl.1.gz",
		"-rw-r--r-- root/root - /usr/share/man/man8/tlsmgr-go.8.gz",
	}
	rpmFile = map[string]string{
		"/etc/sysconfig/tlsmgr-go":                  "/etc/default/tlsmgr-go",
		"/usr/libexec/postfix/tlsmgr-go":            "/usr/lib/postfix/sbin/tlsmgr-go",
		"/usr/sbin/tlsmgrctl":                       "/usr/sbin/tlsmgrctl",
		"/usr/share/doc/tlsmgr-go/CHANGELOG.md":     "/usr/share/doc/tlsmgr-go/CHANGELOG.md",
		"/usr/share/doc/tlsmgr-go/README.md":        "/usr/share/doc/tlsmgr-go/README.md",
		"/usr/share/licenses/tlsmgr-go/LICENSE":     "/usr/share/doc/tlsmgr-go/LICENSE",
		"/usr/share/man/man1/tlsmgrctl.1.gz":        "/usr/share/man/man1/tlsmgrctl.1.gz",
		"/usr/share/man/man8/tlsmgr-go.8.gz":        "/usr/share/man/man8/tlsmgr-go.8.gz",
		"/usr/lib/systemd/system/tlsmgr-go.service": "unit",
	}
)

// sourceFiles are files of the deb that are files of the sources as they
// are, or gzipped (.gz).
var sourceFiles = map[string]string{
	"/etc/default/tlsmgr-go":                 "contrib/tlsmgr-go.default",
	"/usr/share/doc/tlsmgr-go/CHANGELOG.md":  "CHANGELOG.md",
	"/usr/share/doc/tlsmgr-go/LICENSE":       "LICENSE",
	"/usr/share/doc/tlsmgr-go/README.md":     "README.md",
	"/usr/share/lintian/overrides/tlsmgr-go": "packaging/lintian-overrides",
	"/usr/share/man/man1/tlsmgrctl.1.gz":     "man/tlsmgrctl.1",
	"/usr/share/man/man8/tlsmgr-go.8.gz":     "man/tlsmgr-go.8",
}

// The pages the README links to, docs/*.md, are in both packages beside
// it, whatever pages there are.
func init() {
	pages, err := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	if err != nil || len(pages) == 0 {
		panic(fmt.Sprintf("no docs/*.md in %s: %v", repo, err))
	}
	const dir = "/usr/share/doc/tlsmgr-go/docs"
	debContents = append(debContents, "drwxr-xr-x root/root ."+dir+"/")
	rpmContents = append(rpmContents, "drwxr-xr-x root/root - "+dir)
	for _, page := range pages {
		path := dir + "/" + filepath.Base(page)
		src := "docs/" + filepath.Base(page)
		debContents = append(debContents, "-rw-r--r-- root/root ."+path)
		rpmContents = append(rpmContents, "-rw-r--r-- root/root d "+path)
		rpmFile[path] = path
		sourceFiles[path] = src
	}
	byPath := func(a, b string) int { return strings.Compare(lastField(a), lastField(b)) }
	slices.SortStableFunc(debContents, byPath)
	slices.SortStableFunc(rpmContents, byPath)
}

// scripts are the maintainer scripts, by Debian's name and RPM's tag.
var scripts = []struct{ deb, rpm, file string }{
	{"postinst", "POSTIN", "packaging/scripts/postinstall.sh"},
	{"prerm", "PREUN", "packaging/scripts/preremove.sh"},
	{"postrm", "POSTUN", "packaging/scripts/postremove.sh"},
}

func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, cmd := range cmds {
		if _, err := exec.LookPath(cmd); err != nil {
			testenv.Missing(t, cmd)
		}
	}
}

// run runs a command and returns its standard output; a failure fails
// the test, with its standard error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// same reports a difference between two lists as the test's error.
func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "\n  missing: %s", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "\n  extra:   %s", g)
		}
	}
	if b.Len() == 0 {
		fmt.Fprintf(&b, "\n  order: %q", got)
	}
	t.Errorf("%s differs from the expected list:%s", what, b.String())
}

// packageVersion is scripts/packages' package version for version.
func packageVersion(t *testing.T, version string) (string, error) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(repo, "scripts", "packages"), "--version", version)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// The version rule of scripts/packages: git describe's forms, each
// valid for both formats, and releases ordered as git orders them.
func TestVersionRule(t *testing.T) {
	need(t, "bash")
	for _, c := range []struct{ describe, want string }{
		{"0123abc", "0.0.0~git0123abc"},
		{"0123abc-dirty", "0.0.0~git0123abc+dirty"},
		{"1234567", "0.0.0~git1234567"},
		{"v1.2.0-rc.1", "1.2.0~rc.1"},
		{"v1.2.0-rc-2", "1.2.0~rc.2"},
		{"v1.2.0-rc.1-3-gabc1234", "1.2.0~rc.1+3.gabc1234"},
		{"v1.2.0", "1.2.0"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3.gabc1234.dirty"},
		{"1.2.1", "1.2.1"},
		{"v2", "2"},
	} {
		if got, err := packageVersion(t, c.describe); err != nil || got != c.want {
			t.Errorf("scripts/packages --version %s = %q (%v), want %q", c.describe, got, err, c.want)
		}
	}
	for _, bad := range []string{"foo", "v1.2.0_1", "release-1", "-dirty", "v1.2.0-rc_1"} {
		if got, err := packageVersion(t, bad); err == nil {
			t.Errorf("scripts/packages --version %s = %q, want it refused", bad, got)
		}
	}
	// Each sorts before the next, for dpkg and for rpm. (Two untagged
	// builds are not ordered, nor is a modified tree.)
	ordered := []string{"0123abc", "v1.2.0-rc.1", "v1.2.0-rc.1-3-gabc1234", "v1.2.0-rc.2", "v1.2.0",
		"v1.2.0-3-gabc1234", "v1.2.0-12-g0123abc", "v1.2.1", "v1.10.0", "v2.0.0"}
	for i := range ordered {
		v, err := packageVersion(t, ordered[i])
		if err != nil {
			t.Fatal(err)
		}
		ordered[i] = v
	}
	_, dpkg := exec.LookPath("dpkg")
	_, rpm := exec.LookPath("rpm")
	for i := 0; i+1 < len(ordered); i++ {
		a, b := ordered[i], ordered[i+1]
		if dpkg == nil {
			if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
				t.Errorf("dpkg: %s is not older than %s", a, b)
			}
		}
		if rpm == nil {
			out, err := exec.Command("rpm", "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp("%s", "%s"))}`, a, b)).Output()
			if err != nil || strings.TrimSpace(string(out)) != "-1" {
				t.Errorf("rpm: vercmp(%s, %s) = %q (%v), want -1", a, b, out, err)
			}
		}
	}
}

// built is what scripts/packages made: the file of each package by
// format and Go architecture, and the directory where each deb is
// unpacked.
type built struct {
	pkg    map[string]string // "deb/amd64" -> file
	unpack map[string]string // "amd64" -> directory
}

// TestPackages builds the packages, as make packages does, into a
// temporary directory and checks them.
func TestPackages(t *testing.T) {
	testenv.NeedRoot(t)
	need(t, "bash", "git", "go", "gzip", "dpkg-deb", "lintian", "rpm")
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(repo, "scripts", "packages"))
	cmd.Env = []string{"PACKAGES_DIR=" + dir}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PACKAGES_DIR", "PACKAGE_ARCHES", "PACKAGE_FORMATS", "VERSION":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/packages: %v\n%s", err, out)
	}
	t.Logf("scripts/packages: %v\n%s", time.Since(start).Round(time.Second), out)

	b := built{pkg: map[string]string{}, unpack: map[string]string{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	if len(files) != 2*len(arches) {
		t.Fatalf("scripts/packages made %q, want a .deb and an .rpm for each of %d architectures", files, len(arches))
	}
	var version string
	for _, a := range arches {
		deb := filepath.Join(dir, fmt.Sprintf("%s_*_%s.deb", name, a.goarch))
		rpm := filepath.Join(dir, fmt.Sprintf("%s-*-1.%s.rpm", name, a.rpm))
		for format, pattern := range map[string]string{"deb": deb, "rpm": rpm} {
			m, _ := filepath.Glob(pattern)
			if len(m) != 1 {
				t.Fatalf("no one package %s among %q", filepath.Base(pattern), files)
			}
			b.pkg[format+"/"+a.goarch] = m[0]
		}
		v := strings.TrimSpace(run(t, "dpkg-deb", "-f", b.pkg["deb/"+a.goarch], "Version"))
		if version == "" {
			version = v
		} else if v != version {
			t.Errorf("%s has version %s, %s has %s", b.pkg["deb/"+a.goarch], v, b.pkg["deb/amd64"], version)
		}
		b.unpack[a.goarch] = filepath.Join(t.TempDir(), a.goarch)
		run(t, "dpkg-deb", "-x", b.pkg["deb/"+a.goarch], b.unpack[a.goarch])
	}

	t.Run("lintian", func(t *testing.T) {
		t.Parallel()
		var debs []string
		for _, a := range arches {
			debs = append(debs, b.pkg["deb/"+a.goarch])
		}
		out := run(t, "lintian", append([]string{"--fail-on", "error,warning", "-I"}, debs...)...)
		t.Logf("lintian -I (infos are not checked):\n%s", out)
		for _, line := range lines(out) {
			if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") ||
				strings.Contains(line, "unused-override") || strings.Contains(line, "mismatched-override") {
				t.Errorf("lintian: %s", line)
			}
		}
	})
	for _, a := range arches {
		t.Run("deb/"+a.goarch, func(t *testing.T) {
			t.Parallel()
			checkDeb(t, b, a, version)
		})
		t.Run("rpm/"+a.goarch, func(t *testing.T) {
			t.Parallel()
			checkRPM(t, b, a, version)
		})
	}
	t.Run("version", func(t *testing.T) {
		t.Parallel()
		checkVersion(t, b, version)
	})
}

// fields parses control fields ("Name: value", continued by lines that
// start with a space).
func fields(s string) map[string]string {
	m := map[string]string{}
	var last string
	for _, line := range lines(s) {
		if strings.HasPrefix(line, " ") && last != "" {
			m[last] += "\n" + line
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		last = k
		m[k] = strings.TrimSpace(v)
	}
	return m
}

func checkDeb(t *testing.T, b built, a arch, version string) {
	deb := b.pkg["deb/"+a.goarch]
	root := b.unpack[a.goarch]

	f := fields(run(t, "dpkg-deb", "-f", deb))
	for k, want := range map[string]string{
		"Package": name, "Version": version, "Architecture": a.goarch, "Recommends": "postfix",
		"Section": "mail", "Priority": "optional", "Maintainer": maintainer, "Homepage": homepage,
	} {
		if f[k] != want {
			t.Errorf("%s: %s: %q, want %q", filepath.Base(deb), k, f[k], want)
		}
	}
	for _, k := range []string{"Depends", "Pre-Depends", "Conflicts", "Breaks", "Replaces", "Provides"} {
		if v, ok := f[k]; ok {
			t.Errorf("%s: %s: %s, want none", filepath.Base(deb), k, v)
		}
	}
	if synopsis, _, _ := strings.Cut(f["Description"], "\n"); synopsis != summary {
		t.Errorf("%s: Description's first line %q, want %q", filepath.Base(deb), synopsis, summary)
	}

	// The files, exactly.
	var got []string
	for _, line := range lines(run(t, "dpkg-deb", "-c", deb)) {
		fs := strings.Fields(line) // mode owner size date time path
		if len(fs) != 6 {
			t.Fatalf("dpkg-deb -c: %q", line)
		}
		got = append(got, fs[0]+" "+fs[1]+" "+fs[5])
	}
	same(t, "dpkg-deb -c "+filepath.Base(deb), got, debContents)
	var paths []string
	for _, c := range debContents {
		paths = append(paths, strings.TrimPrefix(lastField(c), "."))
	}
	notPostfixs(t, paths)
	if got := lines(run(t, "dpkg-deb", "-I", deb, "conffiles")); !slices.Equal(got, []string{debian.environment}) {
		t.Errorf("conffiles: %q, want %s", got, debian.environment)
	}

	// The maintainer scripts are packaging/scripts'.
	control := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, control)
	var have []string
	entries, _ := os.ReadDir(control)
	for _, e := range entries {
		have = append(have, e.Name())
	}
	same(t, "control files", have, []string{"conffiles", "control", "md5sums", "postinst", "postrm", "prerm"})
	for _, s := range scripts {
		if !bytes.Equal(read(t, filepath.Join(control, s.deb)), read(t, filepath.Join(repo, s.file))) {
			t.Errorf("%s is not %s", s.deb, s.file)
		}
		if fi, err := os.Stat(filepath.Join(control, s.deb)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, want mode 0755", s.deb, err)
		}
	}

	// The files' contents.
	for path, src := range sourceFiles {
		got := read(t, filepath.Join(root, path))
		if strings.HasSuffix(path, ".gz") {
			got = gunzip(t, path, got)
		}
		if !bytes.Equal(got, read(t, filepath.Join(repo, src))) {
			t.Errorf("%s is not %s", path, src)
		}
	}
	if got := string(read(t, filepath.Join(root, debian.unit))); got != unit(t, debian) {
		t.Errorf("%s is not contrib/tlsmgr-go.service with %s and %s:\n%s", debian.unit, debian.daemon, debian.environment, got)
	}
	for _, prog := range []string{debian.daemon, "/usr/sbin/tlsmgrctl"} {
		static(t, filepath.Join(root, prog), a.machine)
	}
	changelog := string(gunzip(t, "changelog.gz", read(t, filepath.Join(root, "usr/share/doc/tlsmgr-go/changelog.gz"))))
	if want := fmt.Sprintf("%s (%s) unstable; urgency=medium\n", name, version); !strings.HasPrefix(changelog, want) {
		t.Errorf("changelog.gz does not start with %q:\n%s", want, changelog)
	}
	// copyright names every module linked in, and the Go library.
	copyright := string(read(t, filepath.Join(root, "usr/share/doc/tlsmgr-go/copyright")))
	if !strings.HasPrefix(copyright, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") ||
		!strings.Contains(copyright, "\nFiles: *\n") || !strings.Contains(copyright, "\nFiles: go/*\n") ||
		!strings.Contains(copyright, "\nLicense: Apache-2.0\n") {
		t.Errorf("copyright is not the expected machine-readable file:\n%s", copyright)
	}
	for _, prog := range []string{debian.daemon, "/usr/sbin/tlsmgrctl"} {
		for _, line := range lines(run(t, "go", "version", "-m", filepath.Join(root, prog))) {
			if fs := strings.Fields(line); len(fs) >= 3 && fs[0] == "dep" {
				if !strings.Contains(copyright, "\nFiles: "+fs[1]+"/*\n") || !strings.Contains(copyright, "\nComment: "+fs[1]+" "+fs[2]) {
					t.Errorf("copyright lacks %s %s, linked into %s", fs[1], fs[2], prog)
				}
			}
		}
	}
}

func checkRPM(t *testing.T, b built, a arch, version string) {
	rpm := b.pkg["rpm/"+a.goarch]
	root := b.unpack[a.goarch]
	q := func(args ...string) string {
		t.Helper()
		return run(t, "rpm", append(append([]string{"-qp"}, args...), rpm)...)
	}

	info := lines(q("--qf", "%{NAME}\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n%{LICENSE}\n%{URL}\n%{VENDOR}\n%{PACKAGER}\n%{SUMMARY}\n%{OS}\n"))
	same(t, "rpm -qp --qf NAME...", info, []string{name, version, "1", a.rpm, "Apache-2.0", homepage, "tlsmgr-go maintainers", maintainer, summary, "linux"})
	if got := lines(q("--recommends")); !slices.Equal(got, []string{"postfix"}) {
		t.Errorf("rpm -qp --recommends: %q, want postfix", got)
	}
	for _, req := range lines(q("--requires")) {
		if !strings.HasPrefix(req, "rpmlib(") {
			t.Errorf("rpm -qp --requires: %s; want no dependency", req)
		}
	}
	for _, flag := range []string{"--suggests", "--conflicts", "--obsoletes", "--supplements", "--enhances"} {
		if got := q(flag); got != "" {
			t.Errorf("rpm -qp %s: %q, want nothing", flag, got)
		}
	}

	// The files, exactly.
	var paths []string
	for _, c := range rpmContents {
		paths = append(paths, lastField(c))
	}
	same(t, "rpm -qpl "+filepath.Base(rpm), lines(q("-l")), paths)
	var got []string
	for _, line := range lines(q("--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]")) {
		fs := strings.Fields(line)
		if len(fs) == 3 { // no flags
			fs = []string{fs[0], fs[1], "-", fs[2]}
		}
		got = append(got, strings.Join(fs, " "))
	}
	same(t, "rpm file modes and flags", got, rpmContents)
	notPostfixs(t, paths)

	// Each file is the deb's, or the unit with RPM's paths.
	if algo := strings.TrimSpace(q("--qf", "%{FILEDIGESTALGO}")); algo != "8" {
		t.Fatalf("rpm file digests are of algorithm %s, want 8 (SHA-256)", algo)
	}
	for _, line := range lines(q("--qf", "[%{FILEDIGESTS} %{FILENAMES}\n]")) {
		digest, path, _ := strings.Cut(line, " ")
		if digest == "" {
			continue // a directory
		}
		var want []byte
		switch deb := rpmFile[path]; deb {
		case "":
			t.Errorf("%s: unexpected file", path)
			continue
		case "unit":
			want = []byte(unit(t, redhat))
		default:
			want = read(t, filepath.Join(root, deb))
		}
		if sum := sha256.Sum256(want); hex.EncodeToString(sum[:]) != digest {
			t.Errorf("%s is not %s", path, rpmFile[path])
		}
	}

	// The scriptlets are packaging/scripts', run by /bin/sh.
	for _, s := range scripts {
		body := q("--qf", "%{"+s.rpm+"}")
		if strings.TrimSpace(body) != strings.TrimSpace(string(read(t, filepath.Join(repo, s.file)))) {
			t.Errorf("rpm %s scriptlet is not %s:\n%s", s.rpm, s.file, body)
		}
		if prog := q("--qf", "%{"+s.rpm+"PROG}"); prog != "/bin/sh" {
			t.Errorf("rpm %s scriptlet runs with %q, want /bin/sh", s.rpm, prog)
		}
	}
	for _, tag := range []string{"PREIN", "PRETRANS", "POSTTRANS"} {
		if got := q("--qf", "%{"+tag+"}"); got != "(none)" {
			t.Errorf("rpm %s scriptlet: %q, want none", tag, got)
		}
	}
}

// The programs report the version the packages have: a daemon of the
// package for this machine's architecture, run standalone, and
// tlsmgrctl version (tlsmgrctl's, then the daemon's) give git describe's
// version, which scripts/packages turns into the packages' version.
func checkVersion(t *testing.T, b built, version string) {
	root, ok := b.unpack[runtime.GOARCH]
	if !ok {
		t.Skipf("no package for %s to run", runtime.GOARCH)
	}
	e := daemontest.NewEnv(t, daemontest.MemoryCaches)
	p := e.Start(t, filepath.Join(root, debian.daemon))
	defer p.Kill()
	out := run(t, filepath.Join(root, "usr/sbin/tlsmgrctl"), "-s", e.Sock, "version")
	p.Stop(t)
	got := lines(out)
	describe, ok := strings.CutPrefix(got[0], "tlsmgrctl ")
	if !ok || describe == "" || !slices.Equal(got, []string{"tlsmgrctl " + describe, "tlsmgr " + describe}) {
		t.Fatalf("tlsmgrctl version printed %q, want tlsmgrctl's and tlsmgr's version, the same", out)
	}
	mapped, err := packageVersion(t, describe)
	if err != nil || mapped != version {
		t.Errorf("the programs' version %s makes package version %q (%v), the packages have %s", describe, mapped, err, version)
	}
	for _, a := range arches {
		if v := strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{VERSION}", b.pkg["rpm/"+a.goarch])); v != version {
			t.Errorf("%s has version %s, want %s", filepath.Base(b.pkg["rpm/"+a.goarch]), v, version)
		}
	}
	t.Logf("programs: %s; packages: %s", describe, version)
}

// unit is contrib/tlsmgr-go.service with a family's paths.
func unit(t *testing.T, f family) string {
	t.Helper()
	s := string(read(t, filepath.Join(repo, "contrib", "tlsmgr-go.service")))
	const start = "\nExecStart=/usr/local/sbin/tlsmgr-go "
	if !strings.Contains(s, start) {
		t.Fatalf("contrib/tlsmgr-go.service has no %q", start)
	}
	s = strings.Replace(s, start, "\nExecStart="+f.daemon+" ", 1)
	return strings.ReplaceAll(s, "/etc/default/tlsmgr-go", f.environment)
}

// static checks that an ELF program is for machine, static (no
// interpreter, no dynamic section) and stripped.
func static(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine || f.Type != elf.ET_EXEC {
		t.Errorf("%s: %v %v, want %v ET_EXEC", path, f.Machine, f.Type, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has %v: not static", path, p.Type)
		}
	}
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug") || strings.HasPrefix(s.Name, ".zdebug") {
			t.Errorf("%s has %s: not stripped", path, s.Name)
		}
	}
}

// notPostfixs fails for a path that is, or may become, a file of
// Postfix's: anything named tlsmgr or tlsmgr.8, anything in /etc/postfix,
// and where Debian's postfix is installed, any of its files.
func notPostfixs(t *testing.T, paths []string) {
	t.Helper()
	var postfix []string
	if out, err := exec.Command("dpkg-query", "-L", "postfix").Output(); err == nil {
		for _, p := range lines(string(out)) {
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				postfix = append(postfix, p)
			}
		}
	}
	for _, p := range paths {
		p = strings.TrimSuffix(p, "/")
		base := filepath.Base(p)
		if base == "tlsmgr" || strings.HasPrefix(base, "tlsmgr.") || strings.HasPrefix(p, "/etc/postfix") {
			t.Errorf("%s may be Postfix's", p)
		}
		if slices.Contains(postfix, p) {
			t.Errorf("%s is a file of Debian's postfix", p)
		}
	}
}

func lastField(s string) string { return s[strings.LastIndexByte(s, ' ')+1:] }

func gunzip(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out, err := io.ReadAll(bufio.NewReader(r))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

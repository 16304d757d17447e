// Package pfversion finds which Postfix the daemon serves and what that
// version's tlsmgr clients expect on the wire. master(8) tells its
// children nothing about its version, so the daemon asks the installed
// Postfix: postconf's mail_version, cross-checked against the
// mail_version stamp that every Postfix daemon binary carries.
package pfversion

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Version is a Postfix release ("3.5.25", "2.11.0-RC1") or snapshot
// ("3.6-20200920").
type Version struct {
	Major, Minor int
	Patch        int // -1 for a snapshot
	Snapshot     int // YYYYMMDD of a snapshot, 0 for a release
	Text         string
}

func (v Version) String() string { return v.Text }

// Parse reads a mail_version value. Anything after the release number or
// snapshot date ("-RC1", "-nonprod", a vendor's suffix) is kept in Text
// and otherwise ignored.
func Parse(s string) (Version, error) {
	v := Version{Text: s, Patch: -1}
	bad := func() (Version, error) { return Version{}, fmt.Errorf("not a Postfix version: %q", limit(s)) }
	num, rest, _ := strings.Cut(s, "-")
	parts := strings.Split(num, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return bad()
	}
	var nums [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || p == "" || p[0] == '+' {
			return bad()
		}
		nums[i] = n
	}
	v.Major, v.Minor = nums[0], nums[1]
	if len(parts) == 3 {
		v.Patch = nums[2]
		return v, nil
	}
	// X.Y without a patch level is a snapshot: X.Y-YYYYMMDD.
	if len(rest) < 8 {
		return bad()
	}
	date, err := strconv.Atoi(rest[:8])
	if err != nil || rest[0] == '+' || rest[0] == '-' || date < 19980101 {
		return bad()
	}
	v.Snapshot = date
	return v, nil
}

func limit(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// atLeast reports whether v is the release series major.minor at or after
// the snapshot of date, or a later series. A release (not a snapshot) of
// the series counts as after every snapshot of it.
func (v Version) atLeast(major, minor, date int) bool {
	switch {
	case v.Major != major:
		return v.Major > major
	case v.Minor != minor:
		return v.Minor > minor
	case v.Snapshot == 0:
		return true
	}
	return v.Snapshot >= date
}

// ServerSpeaksFirst reports whether this version's clients wait for the
// server's protocol announcement before their first request: Postfix
// 3.6 and later, from snapshot 3.6-20200920 ("internal protocol
// identification"). Earlier clients send their request at once and would
// read an announcement as its reply.
func (v Version) ServerSpeaksFirst() bool { return v.atLeast(3, 6, 20200920) }

// TicketKeyRecordLen is the length of the ticket key record (the C
// struct TLS_TICKET_KEY) that this version's clients accept in a tktkey
// reply; they drop a record of any other length. Postfix 2.11 used
// AES-128 with 16-byte keys (56 bytes); 3.0, from snapshot 2.12-20140406,
// uses 32-byte AES-256 and HMAC keys (88 bytes on 64-bit hosts). Clients
// before 2.11 never ask for keys.
func (v Version) TicketKeyRecordLen() int {
	if v.atLeast(2, 12, 20140406) {
		return 88
	}
	return 56
}

// maxOutput bounds what is read from postconf or a binary.
const (
	maxOutput    = 4 << 10
	maxBinary    = 64 << 20
	queryTimeout = 10 * time.Second
)

// Query runs "postconf -c configDir -dh mail_version" from commandDir and
// parses its answer. cred, if not nil, is the account it runs as (the
// mail owner: postconf needs no privilege). Its environment is empty but
// for MAIL_CONFIG, and it gets queryTimeout.
func Query(ctx context.Context, commandDir, configDir string, cred *syscall.Credential) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	path := strings.TrimRight(commandDir, "/") + "/postconf"
	args := []string{"-dh", "mail_version"}
	if configDir != "" {
		args = append([]string{"-c", configDir}, args...)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if configDir != "" {
		cmd.Env = append(cmd.Env, "MAIL_CONFIG="+configDir)
	}
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errOut limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if msg := firstLine(errOut.Bytes()); msg != "" {
			return Version{}, fmt.Errorf("%s: %v: %s", path, err, msg)
		}
		return Version{}, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(firstLine(out.Bytes()))
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSpace(string(line))
}

// limitedBuffer keeps the first maxOutput bytes written to it and drops
// the rest, so that no program's output is held unbounded.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// stampPrefix precedes the version in every Postfix program since 2.4
// (MAIL_VERSION_STAMP_ALLOCATE).
var stampPrefix = []byte("mail_version=")

// ErrNoStamp is returned by Stamp for a file without a mail_version stamp.
var ErrNoStamp = errors.New("no mail_version stamp")

// Stamp reads the mail_version stamp of the Postfix program at path
// (e.g. daemon_directory's smtpd). The file is opened without following
// a symbolic link in its last component and without blocking, must be a
// regular file, and is read up to maxBinary bytes.
func Stamp(path string) (Version, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return Version{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Version{}, err
	}
	if !fi.Mode().IsRegular() {
		return Version{}, fmt.Errorf("%s: not a regular file", path)
	}
	// Scan in blocks that overlap by a stamp's length, so that one cut
	// by a block boundary is found in the next block.
	const block, overlap = 256 << 10, 64
	buf := make([]byte, block+overlap)
	keep, total := 0, 0
	r := io.LimitReader(f, maxBinary)
	for {
		n, err := io.ReadFull(r, buf[keep:])
		data := buf[:keep+n]
		total += n
		if i := bytes.Index(data, stampPrefix); i >= 0 {
			rest := data[i+len(stampPrefix):]
			if end := bytes.IndexByte(rest, 0); end >= 0 || err != nil {
				if end < 0 {
					end = len(rest)
				}
				return Parse(string(rest[:end]))
			}
			// The version runs past this block: go on from the stamp.
			keep = copy(buf, data[i:])
			if keep > overlap {
				return Version{}, fmt.Errorf("%s: mail_version stamp without an end", path)
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return Version{}, fmt.Errorf("%s: %w", path, ErrNoStamp)
			}
			return Version{}, err
		}
		keep = copy(buf, data[len(data)-overlap:])
	}
}

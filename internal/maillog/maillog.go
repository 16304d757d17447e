// Package maillog is tlsmgr's logging: a log/slog Handler that writes
// records the way Postfix programs do, to the postlogd(8) socket when
// maillog_file is in use, otherwise to syslog, and optionally also to
// stderr (-V); the levels Postfix has and slog lacks (level.go); helpers
// that log Postfix's prose through any *slog.Logger (Infof, Warnf...);
// and the rate limits of warnings and errors (limit.go).
//
// The sockets are connected by New and kept, because the daemon chroots and
// drops privileges afterwards and may no longer reach the socket paths.
// Logging never blocks the caller for more than a few milliseconds: a record
// that cannot be sent is dropped and counted.
//
// Warnings and errors are rate-limited per format string, or by the rule
// of their Cause (see limit.go); the next record let through reports how
// many were suppressed.
package maillog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Severities, in Postfix's order: what a record's slog level comes to
// (see severity).
const (
	levelInfo = iota
	levelWarn
	levelError
	levelFatal
	levelPanic
)

// severity maps a slog level to Postfix's: below LevelWarn is info
// (debug records are logged like info ones, as msg_info does for -v).
func severity(l slog.Level) int {
	switch {
	case l >= LevelPanic:
		return levelPanic
	case l >= LevelFatal:
		return levelFatal
	case l >= LevelError:
		return levelError
	case l >= LevelWarn:
		return levelWarn
	}
	return levelInfo
}

// Syslog severities used by Postfix for each level: fatal and panic are
// both logged as LOG_CRIT.
var syslogSeverity = [...]int{
	levelInfo:  6, // LOG_INFO
	levelWarn:  4, // LOG_WARNING
	levelError: 3, // LOG_ERR
	levelFatal: 2, // LOG_CRIT
	levelPanic: 2, // LOG_CRIT
}

// severityName is the name of each severity (LevelName).
var severityName = [...]string{
	levelInfo:  "info",
	levelWarn:  "warn",
	levelError: "error",
	levelFatal: "fatal",
	levelPanic: "panic",
}

var levelPrefix = [...]string{
	levelInfo:  "",
	levelWarn:  "warning: ",
	levelError: "error: ",
	levelFatal: "fatal: ",
	levelPanic: "panic: ",
}

// facilities maps syslog_facility names to codes (already shifted), as
// Linux defines them.
var facilities = map[string]int{
	"kern": 0 << 3, "user": 1 << 3, "mail": 2 << 3, "daemon": 3 << 3,
	"auth": 4 << 3, "syslog": 5 << 3, "lpr": 6 << 3, "news": 7 << 3,
	"uucp": 8 << 3, "cron": 9 << 3, "authpriv": 10 << 3, "ftp": 11 << 3,
	"local0": 16 << 3, "local1": 17 << 3, "local2": 18 << 3, "local3": 19 << 3,
	"local4": 20 << 3, "local5": 21 << 3, "local6": 22 << 3, "local7": 23 << 3,
}

// MaxTextLen is the limit Postfix puts on the text of one record (bytes).
const MaxTextLen = 2000

// DefaultSyslogPath is the syslog socket glibc's syslog(3) uses.
const DefaultSyslogPath = "/dev/log"

const (
	// congestionWait bounds how long one record may wait for room in a
	// full socket queue.
	congestionWait = 5 * time.Millisecond
	// congestionHold: after a record was dropped for lack of room, do not
	// wait again for this long, so a stuck reader costs callers nothing.
	congestionHold = 100 * time.Millisecond
	// defaultRetryInterval limits reconnection attempts after the
	// connection was lost.
	defaultRetryInterval = time.Second
)

// Options configures a Handler.
type Options struct {
	Tag      string // e.g. "postfix/tlsmgr" (syslog_name/process_name)
	Facility string // syslog_facility, e.g. "mail"; default "mail"
	Syslog   bool   // send records to syslog
	// SyslogPath is the syslog socket; default DefaultSyslogPath.
	SyslogPath string
	// Postlog is the postlogd socket ($queue_directory/public/postlog).
	// When set, records go there instead of syslog.
	Postlog string
	Stderr  io.Writer // if non-nil, records also go here, one per line
	// Hostname goes into postlog and stderr records; Postfix uses
	// $myhostname. Default os.Hostname(); only the first label is used.
	Hostname string
	// Verbose is the -v count: records down to VerboseLevel(Verbose)
	// are logged (Debugf(l, v, ...) when v <= Verbose).
	Verbose int
	// Exit is called once a record at LevelFatal (code 1) or LevelPanic
	// (code 2) is written; default os.Exit.
	Exit func(code int)
}

// Handler is the slog.Handler that writes Postfix's records. It is safe
// for concurrent use; the handlers WithAttrs and WithGroup derive from it
// share its output and rate limits.
//
// A record's text is its message, then its attributes as " key=value".
// What the helpers of this package tell the rate limit (the format string,
// a Cause) comes in the context of the record, and is not written.
type Handler struct {
	*logger
	attrs string // rendered by WithAttrs
	group string // WithGroup's prefix of attribute keys, "g." per group
}

// logger is a Handler's output and rate limits.
type logger struct {
	tag      string
	host     string
	pid      int
	priority int        // facility code
	minLevel slog.Level // VerboseLevel(Options.Verbose)
	exit     func(int)
	postlog  bool             // the socket is postlogd's, not syslog's
	now      func() time.Time // replaceable in tests

	stderrMu sync.Mutex
	stderr   io.Writer

	dropped atomic.Uint64
	limit   Limiter

	mu              sync.Mutex // guards the socket state below
	fd              int        // connected datagram socket, -1 if none
	path            string     // socket path as given
	root            string     // chroot directory, for reconnecting by path
	nextRetry       time.Time
	retryInterval   time.Duration
	congestedUntil  time.Time
	closed          bool
	lastConnectFail error
}

// New connects the log socket (if any) and returns the Handler. A socket
// that cannot be connected now is not an error: records are dropped until
// a later reconnection attempt succeeds, as Postfix does.
func New(opts Options) (*Handler, error) {
	facility := opts.Facility
	if facility == "" {
		facility = "mail"
	}
	code, ok := facilities[facility]
	if !ok {
		return nil, fmt.Errorf("maillog: unknown syslog facility %q", facility)
	}
	host := opts.Hostname
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		host = h
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	exit := opts.Exit
	if exit == nil {
		exit = os.Exit
	}
	l := &logger{
		tag:           opts.Tag,
		host:          host,
		pid:           os.Getpid(),
		priority:      code,
		minLevel:      VerboseLevel(opts.Verbose),
		exit:          exit,
		stderr:        opts.Stderr,
		fd:            -1,
		retryInterval: defaultRetryInterval,
		now:           time.Now,
	}
	switch {
	case opts.Postlog != "":
		l.path, l.postlog = opts.Postlog, true
	case opts.Syslog:
		l.path = opts.SyslogPath
		if l.path == "" {
			l.path = DefaultSyslogPath
		}
	}
	// Load the local time zone now: /etc/localtime is out of reach once
	// the process has chrooted.
	_ = time.Now().Local().Format(time.Stamp)
	if l.path != "" {
		l.mu.Lock()
		l.connectLocked()
		l.mu.Unlock()
	}
	return &Handler{logger: l}, nil
}

// ConnectError reports why the last connection attempt failed, or nil if
// the socket is connected (or none is configured).
func (h *Handler) ConnectError() error {
	l := h.logger
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd >= 0 {
		return nil
	}
	return l.lastConnectFail
}

// Dropped returns the number of records that could not be sent to the log
// socket.
func (h *Handler) Dropped() uint64 { return h.dropped.Load() }

// Suppressed returns the number of warnings and errors that were not
// logged because their format string exceeded its rate limit (see
// Limiter.Suppressed).
func (h *Handler) Suppressed() uint64 { return h.limit.Suppressed() }

// SetChroot tells the Handler that the process now runs chrooted to root,
// so that a reconnection uses the socket path as seen inside the jail (an
// absolute path below root loses that prefix; others are kept, e.g.
// /dev/log then means root/dev/log).
func (h *Handler) SetChroot(root string) {
	l := h.logger
	l.mu.Lock()
	l.root = root
	l.mu.Unlock()
}

// Close closes the log socket. Later records only go to Stderr.
func (h *Handler) Close() error {
	l := h.logger
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
	return err
}

// Enabled reports whether records at level are logged: down to
// VerboseLevel(Options.Verbose).
func (h *Handler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.minLevel
}

// Handle writes r unless its rate limit (see Limiter) holds it back. Its
// level gives the record's prefix ("warning: "...) and syslog severity;
// once a record at LevelFatal or LevelPanic is written, the process exits
// (Options.Exit) with status 1 or 2.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	// The rate limit decides before the text is rendered, as for the
	// helpers (printf): a suppressed record costs only the table lookup.
	m, key := recordMeta(ctx, r)
	h.emit(r.Level, m, key, func() string { return h.render(r) })
	return nil
}

// WithAttrs returns a Handler that writes attrs after the message of
// each record, before the record's own.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	b := []byte(h.attrs)
	for _, a := range attrs {
		b = appendAttr(b, h.group, a)
	}
	return &Handler{logger: h.logger, attrs: string(b), group: h.group}
}

// WithGroup returns a Handler that puts name and a dot before the keys of
// the attributes that follow.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{logger: h.logger, attrs: h.attrs, group: h.group + name + "."}
}

// printf is what the helpers (Infof...) do with a Handler of this
// package: the rate limit decides before formatting, so that a suppressed
// record costs only the table lookup.
func (h *Handler) printf(level slog.Level, m meta, format string, args []any) {
	if level < h.minLevel {
		return
	}
	h.emit(level, m, format, func() string { return fmt.Sprintf(format, args...) + h.attrs })
}

// render returns the text of r: the message, then the attributes.
func (h *Handler) render(r slog.Record) string {
	if h.attrs == "" && r.NumAttrs() == 0 {
		return r.Message
	}
	b := append([]byte(r.Message), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.group, a)
		return true
	})
	return string(b)
}

// appendAttr appends " key=value", the key after the groups' prefix, the
// value quoted if it has spaces, '=' or '"' or is empty.
func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			b = appendAttr(b, prefix, g)
		}
		return b
	}
	b = append(b, ' ')
	b = append(b, prefix...)
	b = append(b, a.Key...)
	b = append(b, '=')
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " =\"") {
		return strconv.AppendQuote(b, v)
	}
	return append(b, v...)
}

// emit writes one record, its rate limit permitting; key is its cause
// for the default limit (the format string).
func (l *logger) emit(level slog.Level, m meta, key string, text func() string) {
	now := l.now()
	sev := severity(level)
	note, ok := l.limit.check(sev, m, key, now)
	if !ok {
		return
	}
	t := sanitize(text())
	if note != "" {
		// The note must survive the length limit: cut the text instead.
		t = truncate(t, MaxTextLen-len(note)) + note
	}
	l.write(now, sev, t)
	switch sev {
	case levelFatal:
		l.exit(1)
	case levelPanic:
		l.exit(2)
	}
}

func (l *logger) write(now time.Time, level int, text string) {
	if l.path != "" {
		l.send(l.socketRecord(now, level, text))
	}
	if l.stderr != nil {
		rec := l.fileRecord(now, level, text)
		l.stderrMu.Lock()
		_, _ = io.WriteString(l.stderr, rec)
		l.stderrMu.Unlock()
	}
}

// postlogPrefix is the record header postlogd expects in front of the
// text: "Mmm dd hh:mm:ss host tag[pid]: " (day zero-padded, host cut at the
// first dot). postlogd appends the newline when it writes the file.
func (l *logger) postlogPrefix(now time.Time) string {
	return fmt.Sprintf("%s %s %s[%d]: ", now.Format("Jan 02 15:04:05"), l.host, l.tag, l.pid)
}

// socketRecord formats one datagram for the configured socket.
func (l *logger) socketRecord(now time.Time, level int, text string) []byte {
	if l.postlog {
		return []byte(l.postlogPrefix(now) + levelPrefix[level] + text)
	}
	// glibc syslog(3) with LOG_PID: "<pri>Mmm dd hh:mm:ss tag[pid]: text",
	// day space-padded, no host name, no trailing newline on a datagram.
	return fmt.Appendf(nil, "<%d>%s %s[%d]: %s%s", l.priority|syslogSeverity[level],
		now.Format(time.Stamp), l.tag, l.pid, levelPrefix[level], text)
}

// fileRecord is a line as postlogd writes it into maillog_file.
func (l *logger) fileRecord(now time.Time, level int, text string) string {
	return l.postlogPrefix(now) + levelPrefix[level] + text + "\n"
}

// send delivers one datagram without blocking for long; on failure the
// record is dropped.
func (l *logger) send(rec []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if l.fd < 0 && !l.reconnectLocked() {
		l.dropped.Add(1)
		return
	}
	err := l.trySendLocked(rec)
	if err == nil {
		return
	}
	if isDisconnect(err) {
		// The server socket was recreated (e.g. master restarted):
		// reconnect by path if it is still reachable, and retry once.
		unix.Close(l.fd)
		l.fd = -1
		l.nextRetry = time.Time{}
		if l.reconnectLocked() && l.trySendLocked(rec) == nil {
			return
		}
	}
	l.dropped.Add(1)
}

// trySendLocked sends without blocking; if the receiver's queue is full it
// waits briefly for room, unless it recently had to give up.
func (l *logger) trySendLocked(rec []byte) error {
	const flags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	for {
		err := unix.Sendto(l.fd, rec, flags, nil)
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			return err
		}
		break
	}
	now := time.Now()
	if now.Before(l.congestedUntil) {
		return unix.EAGAIN
	}
	deadline := now.Add(congestionWait)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		pfd := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLOUT}}
		ms := int(wait / time.Millisecond)
		if ms == 0 {
			ms = 1
		}
		if _, err := unix.Poll(pfd, ms); err != nil && err != unix.EINTR {
			break
		}
		err := unix.Sendto(l.fd, rec, flags, nil)
		if err == nil {
			return nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			return err
		}
	}
	l.congestedUntil = time.Now().Add(congestionHold)
	return unix.EAGAIN
}

func isDisconnect(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOTCONN) ||
		errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) ||
		errors.Is(err, unix.EBADF) || errors.Is(err, unix.EDESTADDRREQ)
}

// reconnectLocked connects unless an attempt failed too recently.
func (l *logger) reconnectLocked() bool {
	if time.Now().Before(l.nextRetry) {
		return false
	}
	return l.connectLocked()
}

func (l *logger) connectLocked() bool {
	path := jailedPath(l.path, l.root)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		l.lastConnectFail = fmt.Errorf("maillog: connect %s: %w", path, err)
		l.nextRetry = time.Now().Add(l.retryInterval)
		return false
	}
	l.fd = fd
	l.lastConnectFail = nil
	return true
}

// jailedPath returns path as seen by a process chrooted to root.
func jailedPath(path, root string) string {
	root = strings.TrimRight(root, "/")
	if root == "" {
		return path
	}
	if rest, ok := strings.CutPrefix(path, root); ok && strings.HasPrefix(rest, "/") {
		return rest
	}
	return path
}

// sanitize does what Postfix does to every message: non-printable
// characters become '?', valid UTF-8 is kept, and the text is limited to
// MaxTextLen bytes (cut on a character boundary).
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if !clean {
		var b strings.Builder
		b.Grow(len(s))
		for i := 0; i < len(s); {
			c := s[i]
			if c >= 0x20 && c < 0x7f {
				b.WriteByte(c)
				i++
				continue
			}
			r, size := utf8.DecodeRuneInString(s[i:])
			if (r == utf8.RuneError && size == 1) || r < 0xa0 { // invalid, or C0/DEL/C1 control
				b.WriteByte('?')
				i++
				continue
			}
			b.WriteString(s[i : i+size])
			i += size
		}
		s = b.String()
	}
	return truncate(s, MaxTextLen)
}

// truncate limits s to n bytes, cut on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

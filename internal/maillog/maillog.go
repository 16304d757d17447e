// Package maillog writes log records the way Postfix programs do: to the
// postlogd(8) socket when maillog_file is in use, otherwise to syslog, and
// optionally also to stderr (-V).
//
// The sockets are connected by New and kept, because the daemon chroots and
// drops privileges afterwards and may no longer reach the socket paths.
// Logging never blocks the caller for more than a few milliseconds: a record
// that cannot be sent is dropped and counted.
//
// Warnings and errors are rate-limited per format string (see limit.go);
// the next record let through reports how many were suppressed.
package maillog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Severity levels, in Postfix's order.
const (
	levelInfo = iota
	levelWarn
	levelError
	levelFatal
	levelPanic
)

// Syslog severities used by Postfix for each level: fatal and panic are
// both logged as LOG_CRIT.
var syslogSeverity = [...]int{
	levelInfo:  6, // LOG_INFO
	levelWarn:  4, // LOG_WARNING
	levelError: 3, // LOG_ERR
	levelFatal: 2, // LOG_CRIT
	levelPanic: 2, // LOG_CRIT
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

// Options configures a Logger.
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
	Verbose  int // Debug(level, ...) logs when level <= Verbose
	// Exit is called by Fatal (code 1) and panicf (code 2); default os.Exit.
	Exit func(code int)
}

// Logger is safe for concurrent use.
type Logger struct {
	tag      string
	host     string
	pid      int
	priority int // facility code
	verbose  int
	exit     func(int)
	postlog  bool             // the socket is postlogd's, not syslog's
	now      func() time.Time // replaceable in tests

	stderrMu sync.Mutex
	stderr   io.Writer

	dropped atomic.Uint64
	limit   limiter

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

// New connects the log socket (if any) and returns the Logger. A socket that
// cannot be connected now is not an error: records are dropped until a
// later reconnection attempt succeeds, as Postfix does.
func New(opts Options) (*Logger, error) {
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
	l := &Logger{
		tag:           opts.Tag,
		host:          host,
		pid:           os.Getpid(),
		priority:      code,
		verbose:       opts.Verbose,
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
	return l, nil
}

// ConnectError reports why the last connection attempt failed, or nil if
// the socket is connected (or none is configured).
func (l *Logger) ConnectError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd >= 0 {
		return nil
	}
	return l.lastConnectFail
}

// Dropped returns the number of records that could not be sent to the log
// socket.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Suppressed returns the number of warnings and errors that were not logged
// because their cause exceeded its rate limit.
func (l *Logger) Suppressed() uint64 { return l.limit.total.Load() }

// SetChroot tells the Logger that the process now runs chrooted to root, so
// that a reconnection uses the socket path as seen inside the jail (an
// absolute path below root loses that prefix; others are kept, e.g.
// /dev/log then means root/dev/log).
func (l *Logger) SetChroot(root string) {
	l.mu.Lock()
	l.root = root
	l.mu.Unlock()
}

// Info logs text without a severity prefix. It is never rate-limited: it
// is the transaction logging the operator asked for.
func (l *Logger) Info(format string, args ...any) { l.log(levelInfo, format, args) }

// Warn logs with "warning: " before the text, unless warnings with the same
// format string exceed their rate limit; the next one logged then ends with
// " (N similar warnings suppressed)".
func (l *Logger) Warn(format string, args ...any) { l.logLimited(levelWarn, format, args) }

// WarnAlways is Warn without the rate limit, for warnings that are logged a
// bounded number of times and must all be seen, such as the configuration
// warnings at start-up (which share the format string "%s").
func (l *Logger) WarnAlways(format string, args ...any) { l.log(levelWarn, format, args) }

// Error logs with "error: " before the text, rate-limited like Warn.
func (l *Logger) Error(format string, args ...any) { l.logLimited(levelError, format, args) }

// Fatal logs with "fatal: " before the text and exits with status 1.
func (l *Logger) Fatal(format string, args ...any) {
	l.log(levelFatal, format, args)
	l.exit(1)
}

// panicf logs with "panic: " before the text and exits with status 2.
func (l *Logger) panicf(format string, args ...any) {
	l.log(levelPanic, format, args)
	l.exit(2)
}

// Debug logs like Info when level <= the configured verbosity.
func (l *Logger) Debug(level int, format string, args ...any) {
	if level <= l.verbose {
		l.log(levelInfo, format, args)
	}
}

// Close closes the log socket. Later records only go to Stderr.
func (l *Logger) Close() error {
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

func (l *Logger) log(level int, format string, args []any) {
	l.write(l.now(), level, sanitize(fmt.Sprintf(format, args...)))
}

// logLimited decides before formatting, so that a suppressed record costs
// only the table lookup.
func (l *Logger) logLimited(level int, format string, args []any) {
	now := l.now()
	ok, n, other := l.limit.allow(causeKey{level, format}, now)
	if !ok {
		return
	}
	text := sanitize(fmt.Sprintf(format, args...))
	if n > 0 {
		// The note must survive the length limit: cut the text instead.
		note := suppressedNote(level, n, other)
		text = truncate(text, MaxTextLen-len(note)) + note
	}
	l.write(now, level, text)
}

func (l *Logger) write(now time.Time, level int, text string) {
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
func (l *Logger) postlogPrefix(now time.Time) string {
	return fmt.Sprintf("%s %s %s[%d]: ", now.Format("Jan 02 15:04:05"), l.host, l.tag, l.pid)
}

// socketRecord formats one datagram for the configured socket.
func (l *Logger) socketRecord(now time.Time, level int, text string) []byte {
	if l.postlog {
		return []byte(l.postlogPrefix(now) + levelPrefix[level] + text)
	}
	// glibc syslog(3) with LOG_PID: "<pri>Mmm dd hh:mm:ss tag[pid]: text",
	// day space-padded, no host name, no trailing newline on a datagram.
	return fmt.Appendf(nil, "<%d>%s %s[%d]: %s%s", l.priority|syslogSeverity[level],
		now.Format(time.Stamp), l.tag, l.pid, levelPrefix[level], text)
}

// fileRecord is a line as postlogd writes it into maillog_file.
func (l *Logger) fileRecord(now time.Time, level int, text string) string {
	return l.postlogPrefix(now) + levelPrefix[level] + text + "\n"
}

// send delivers one datagram without blocking for long; on failure the
// record is dropped.
func (l *Logger) send(rec []byte) {
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
func (l *Logger) trySendLocked(rec []byte) error {
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
func (l *Logger) reconnectLocked() bool {
	if time.Now().Before(l.nextRetry) {
		return false
	}
	return l.connectLocked()
}

func (l *Logger) connectLocked() bool {
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

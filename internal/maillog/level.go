package maillog

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// The levels of Postfix's records. Info, warning and error are slog's;
// fatal and panic are Postfix's, above slog's error; the -v levels are
// LevelDebug and below (VerboseLevel).
const (
	LevelDebug = slog.LevelDebug // -v: VerboseLevel(1)
	LevelInfo  = slog.LevelInfo
	LevelWarn  = slog.LevelWarn
	LevelError = slog.LevelError
	LevelFatal = slog.LevelError + 4 // "fatal: ", and the process exits
	LevelPanic = slog.LevelError + 8 // "panic: ", and the process exits
)

// VerboseLevel is the level of a record logged only with v or more -v
// options (Postfix's msg_verbose >= v): LevelDebug for 1, one lower for
// each further -v; LevelInfo for 0. It is also the lowest level a Handler
// with Options.Verbose v writes.
func VerboseLevel(v int) slog.Level {
	if v <= 0 {
		return LevelInfo
	}
	return LevelDebug - slog.Level(v-1)
}

// LevelName returns the name of a level: "debug" below LevelInfo (the -v
// levels), otherwise that of its severity, as the Handler maps it: "info",
// "warn", "error", "fatal" or "panic".
func LevelName(l slog.Level) string {
	if l < LevelInfo {
		return "debug"
	}
	return severityName[severity(l)]
}

// OrDiscard returns l, or if it is nil a logger that discards everything:
// what a package does with the *slog.Logger it is given, nil meaning no
// log. (The helpers below take a nil l as well.)
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return discard
	}
	return l
}

var discard = slog.New(slog.DiscardHandler)

// Postfix's records are prose: a sentence made from a format string, as
// msg_info(3) makes them. The helpers below log such a record through l
// (nil discards), its message the formatted text; its rate limit (see
// Limiter) keys on the format string, which goes with it in the context
// passed to the handler (no attribute: other handlers show nothing of
// it). Through a Handler of this package the limit is applied before the
// text is formatted.

// Infof logs at LevelInfo: Postfix's msg_info, never rate-limited.
func Infof(l *slog.Logger, format string, args ...any) {
	logf(l, LevelInfo, meta{format: format, formatted: true}, format, args)
}

// Debugf logs at VerboseLevel(v): text that Postfix logs with msg_info
// when run with v or more -v options.
func Debugf(l *slog.Logger, v int, format string, args ...any) {
	logf(l, VerboseLevel(v), meta{format: format, formatted: true}, format, args)
}

// Warnf logs at LevelWarn ("warning: "), unless warnings with the same
// format string exceed their rate limit; the next one logged then ends
// with " (N similar warnings suppressed)".
func Warnf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelWarn, meta{format: format, formatted: true}, format, args)
}

// WarnAlwaysf is Warnf without the rate limit, for warnings that are
// logged a bounded number of times and must all be seen, such as the
// configuration warnings at start-up (which share the format string "%s").
func WarnAlwaysf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelWarn, meta{format: format, formatted: true, always: true}, format, args)
}

// Errorf logs at LevelError ("error: "), rate-limited like Warnf.
func Errorf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelError, meta{format: format, formatted: true}, format, args)
}

// Fatalf logs at LevelFatal ("fatal: "): a Handler of this package then
// ends the process with status 1 (Options.Exit).
func Fatalf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelFatal, meta{format: format, formatted: true}, format, args)
}

// panicf logs at LevelPanic ("panic: "): a Handler of this package then
// ends the process with status 2 (Options.Exit).
func panicf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelPanic, meta{format: format, formatted: true}, format, args)
}

// A Cause gives its warnings a rate limit of their own, instead of the
// default one of their format string: Burst of them at once, then one per
// Every; the next one logged after some were suppressed ends with Note,
// whose %d is their number. Warnings of causes with the same Key share a
// limit, wherever they are logged from. A Cause's suppressed warnings are
// not in Handler.Suppressed: whoever logs them counts the events.
type Cause struct {
	Key   string        // e.g. "Redis smtpd replies refused"
	Burst int           // default 1
	Every time.Duration // > 0
	Note  string        // e.g. " (%d more refused since the last report)"
}

// Warnf logs a warning of cause c: at LevelWarn, limited by c's rule.
func (c *Cause) Warnf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelWarn, meta{format: format, formatted: true, cause: c}, format, args)
}

// Coverf logs a warning of another cause (limited by the default rule)
// that reports c as well, such as the line saying why a run of c's
// warnings starts: if it is logged, c's next warning waits at least Every
// from now, as if one of c's own had been logged.
func (c *Cause) Coverf(l *slog.Logger, format string, args ...any) {
	logf(l, LevelWarn, meta{format: format, formatted: true, covers: c}, format, args)
}

// meta is what the helpers tell the rate limit about a record. It goes
// with the record in the context passed to the handler's Handle, not in an
// attribute: a handler of another package must show no trace of it, and
// slog's JSONHandler (Go 1.26) shows even an attribute that resolves to an
// empty group, as "g":{} when the logger has a WithGroup group. A Handler
// of this package reads it there (recordMeta), as does Limiter.Check.
type meta struct {
	format    string
	formatted bool   // format is set: the record was made by a helper
	always    bool   // no rate limit
	cause     *Cause // the record's own rate limit, instead of the default
	covers    *Cause // a cause the record reports as well
}

// metaKey is the context key of a helper's meta.
type metaKey struct{}

// recordMeta returns the tags of r, if a helper made it (they are in
// ctx), and the cause of r for the default rate limit: the format string
// of a helper's record, the message of another. Nothing is rendered.
func recordMeta(ctx context.Context, r slog.Record) (m meta, key string) {
	if ctx != nil {
		m, _ = ctx.Value(metaKey{}).(meta)
	}
	if !m.formatted {
		return m, r.Message
	}
	return m, m.format
}

func logf(l *slog.Logger, level slog.Level, m meta, format string, args []any) {
	if l == nil {
		return
	}
	h := l.Handler()
	if mh, ok := h.(*Handler); ok {
		mh.printf(level, m, format, args)
		return
	}
	ctx := context.Background()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, fmt.Sprintf(format, args...), 0)
	_ = h.Handle(context.WithValue(ctx, metaKey{}, m), r)
}

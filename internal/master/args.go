// Package master implements the master(8) side of a Postfix daemon: the
// generic command line, the status channel, the inherited listening
// sockets, and the process-level operations (chroot, privilege drop, data
// directory redirection) that Postfix servers perform at start-up.
package master

import (
	"fmt"
	"strconv"
	"strings"
)

// Options holds the generic daemon options master(8) passes on the command
// line (see multi_server(3)), plus -listen for standalone mode.
type Options struct {
	Chroot         bool // -c: chroot to queue_directory
	Foreground     bool // -d: do not detach
	Debug          bool // -D: run the debugger
	SingleProcess  bool // -l: process limit is 1
	Stdin          bool // -S: serve one client on stdin/stdout
	DropPrivileges bool // -u: run as mail_owner
	StderrLog      bool // -V: also log to stderr
	Unlimited      bool // -z: process limit is 0

	MaxIdle     int // -i: seconds; -1 if not given
	MaxUse      int // -m: -1 if not given
	SocketCount int // -s: listening sockets from fd 6 on; default 1
	Verbose     int // -v count

	ServiceName string // -n
	Transport   string // -t: unix, inet, pass
	Listen      string // -listen PATH: standalone listening socket

	Overrides []string // -o name=value, in command-line order
}

// optionsWithValue are the getopt letters that take an argument.
const optionsWithValue = "imnost"

// ParseArgs parses the daemon command line (without argv[0]) with POSIX
// getopt rules: flags may be clustered (-lu), a value may be attached (-s2)
// or separate (-s 2), "--" ends the options, and parsing stops at the first
// non-option. The daemon takes no other arguments, so any left over is an
// error. "-listen PATH" and "-listen=PATH" are recognised before getopt
// would read them as -l -i sten.
func ParseArgs(args []string) (*Options, error) {
	o := &Options{SocketCount: 1, MaxIdle: -1, MaxUse: -1}
	i := 0
	for i < len(args) {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if arg == "-listen" {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option -listen requires a path")
			}
			if args[i+1] == "" {
				return nil, fmt.Errorf("option -listen: empty path")
			}
			o.Listen = args[i+1]
			i += 2
			continue
		}
		if path, ok := strings.CutPrefix(arg, "-listen="); ok {
			if path == "" {
				return nil, fmt.Errorf("option -listen: empty path")
			}
			o.Listen = path
			i++
			continue
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		i++
		for j := 1; j < len(arg); j++ {
			c := arg[j]
			if !strings.ContainsRune(optionsWithValue, rune(c)) {
				if err := o.setFlag(c); err != nil {
					return nil, err
				}
				continue
			}
			value := arg[j+1:]
			if value == "" {
				if i >= len(args) {
					return nil, fmt.Errorf("option -%c requires an argument", c)
				}
				value = args[i]
				i++
			}
			if err := o.setValue(c, value); err != nil {
				return nil, err
			}
			break
		}
	}
	if i < len(args) {
		return nil, fmt.Errorf("unexpected command-line argument: %q", args[i])
	}
	return o, nil
}

func (o *Options) setFlag(c byte) error {
	switch c {
	case 'c':
		o.Chroot = true
	case 'd':
		o.Foreground = true
	case 'D':
		o.Debug = true
	case 'l':
		o.SingleProcess = true
	case 'S':
		o.Stdin = true
	case 'u':
		o.DropPrivileges = true
	case 'v':
		o.Verbose++
	case 'V':
		o.StderrLog = true
	case 'z':
		o.Unlimited = true
	default:
		return fmt.Errorf("invalid option: -%c", c)
	}
	return nil
}

func (o *Options) setValue(c byte, value string) error {
	switch c {
	case 'i':
		secs, err := parseSeconds(value)
		if err != nil {
			return fmt.Errorf("invalid -i value %q: %v", value, err)
		}
		o.MaxIdle = secs
	case 'm':
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return fmt.Errorf("invalid -m value %q: want a number >= 0", value)
		}
		o.MaxUse = n
	case 'n':
		o.ServiceName = value
	case 'o':
		if _, _, err := SplitOverride(value); err != nil {
			return fmt.Errorf("invalid \"-o %s\" option value: %v", value, err)
		}
		o.Overrides = append(o.Overrides, value)
	case 's':
		n, err := strconv.Atoi(value)
		if err != nil || n <= 0 {
			return fmt.Errorf("invalid -s value (socket count) %q: want a number > 0", value)
		}
		o.SocketCount = n
	case 't':
		o.Transport = value
	}
	return nil
}

// SplitOverride splits a -o value like Postfix: "name = value" with white
// space around the name and value trimmed; the name must not be empty.
func SplitOverride(s string) (name, value string, err error) {
	name, value, found := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if name == "" {
		return "", "", fmt.Errorf("missing attribute name")
	}
	if !found || strings.ContainsAny(name, " \t\n\r\v\f") {
		return "", "", fmt.Errorf("missing '=' after attribute name")
	}
	return name, strings.TrimSpace(value), nil
}

// parseSeconds reads a Postfix time value: a number with an optional unit
// s, m, h, d or w (seconds when absent).
func parseSeconds(s string) (int, error) {
	unit := 1
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 's':
			s = s[:n-1]
		case 'm':
			unit, s = 60, s[:n-1]
		case 'h':
			unit, s = 3600, s[:n-1]
		case 'd':
			unit, s = 86400, s[:n-1]
		case 'w':
			unit, s = 7*86400, s[:n-1]
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s[0] == '+' {
		return 0, fmt.Errorf("want a number >= 0 with an optional unit s, m, h, d or w")
	}
	if n > (1<<31-1)/unit {
		return 0, fmt.Errorf("value too large")
	}
	return n * unit, nil
}

package master

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	base := func(mod func(o *Options)) *Options {
		o := &Options{SocketCount: 1, MaxIdle: -1, MaxUse: -1}
		if mod != nil {
			mod(o)
		}
		return o
	}
	for _, c := range []struct {
		args []string
		want *Options
	}{
		{nil, base(nil)},
		// What master(8) runs for the Debian master.cf line.
		{[]string{"-l", "-t", "unix", "-u", "-c"}, base(func(o *Options) {
			o.SingleProcess, o.Transport, o.DropPrivileges, o.Chroot = true, "unix", true, true
		})},
		{[]string{"-lu", "-tunix"}, base(func(o *Options) {
			o.SingleProcess, o.DropPrivileges, o.Transport = true, true, "unix"
		})},
		{[]string{"-s2"}, base(func(o *Options) { o.SocketCount = 2 })},
		{[]string{"-s", "2"}, base(func(o *Options) { o.SocketCount = 2 })},
		{[]string{"-lus", "3", "-v"}, base(func(o *Options) {
			o.SingleProcess, o.DropPrivileges, o.SocketCount, o.Verbose = true, true, 3, 1
		})},
		{[]string{"-vvv", "-v", "-V"}, base(func(o *Options) { o.Verbose, o.StderrLog = 4, true })},
		{[]string{"-d", "-D", "-S", "-z"}, base(func(o *Options) {
			o.Foreground, o.Debug, o.Stdin, o.Unlimited = true, true, true, true
		})},
		{[]string{"-i", "100", "-m", "5"}, base(func(o *Options) { o.MaxIdle, o.MaxUse = 100, 5 })},
		{[]string{"-i2m", "-m0"}, base(func(o *Options) { o.MaxIdle, o.MaxUse = 120, 0 })},
		{[]string{"-n", "tlsmgr", "-nother"}, base(func(o *Options) { o.ServiceName = "other" })},
		{[]string{"-o", "a=1", "-ob = 2", "-o", "a=3"}, base(func(o *Options) {
			o.Overrides = []string{"a=1", "b = 2", "a=3"}
		})},
		// An option value may itself look like an option.
		{[]string{"-o", "-x=1", "-n", "-listen"}, base(func(o *Options) {
			o.Overrides, o.ServiceName = []string{"-x=1"}, "-listen"
		})},
		{[]string{"-listen", "/tmp/sock", "-l"}, base(func(o *Options) {
			o.Listen, o.SingleProcess = "/tmp/sock", true
		})},
		{[]string{"-l", "-listen=/tmp/s2", "-v"}, base(func(o *Options) {
			o.Listen, o.SingleProcess, o.Verbose = "/tmp/s2", true, 1
		})},
		{[]string{"-l", "--"}, base(func(o *Options) { o.SingleProcess = true })},
	} {
		got, err := ParseArgs(c.args)
		if err != nil {
			t.Errorf("ParseArgs(%q): %v", c.args, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", c.args, got, c.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // part of the error text
	}{
		{[]string{"-x"}, "-x"},
		{[]string{"-lx"}, "-x"},
		{[]string{"-s"}, "-s"},
		{[]string{"-s", "0"}, "-s"},
		{[]string{"-s", "two"}, "-s"},
		{[]string{"-m", "-1"}, "-m"},
		{[]string{"-i", "5x"}, "-i"},
		{[]string{"-i"}, "-i"},
		{[]string{"-o", "novalue"}, "-o novalue"},
		{[]string{"-o", "=v"}, "-o =v"},
		{[]string{"-listen"}, "-listen"},
		{[]string{"-listen="}, "-listen"},
		{[]string{"extra"}, "extra"},
		{[]string{"-l", "extra", "-v"}, "extra"},
		{[]string{"--", "-l"}, "-l"},
		{[]string{"-"}, `"-"`},
		// Without the special case this would be -l -i sten.
		{[]string{"-listens"}, "-i"},
	} {
		_, err := ParseArgs(c.args)
		if err == nil {
			t.Errorf("ParseArgs(%q) succeeded", c.args)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseArgs(%q) error %q does not mention %q", c.args, err, c.want)
		}
	}
}

func TestSplitOverride(t *testing.T) {
	for _, c := range []struct{ in, name, value, err string }{
		{"a=b", "a", "b", ""},
		{"  name =  some value  ", "name", "some value", ""},
		{"empty=", "empty", "", ""},
		{"x=y=z", "x", "y=z", ""},
		{"", "", "", "missing attribute name"},
		{" = v", "", "", "missing attribute name"},
		{"name", "", "", "missing '='"},
		{"two words=v", "", "", "missing '='"},
	} {
		name, value, err := SplitOverride(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SplitOverride(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || name != c.name || value != c.value {
			t.Errorf("SplitOverride(%q) = %q, %q, %v; want %q, %q", c.in, name, value, err, c.name, c.value)
		}
	}
}

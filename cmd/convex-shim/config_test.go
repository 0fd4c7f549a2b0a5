package main

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var defaults = config{
	forwards:     []forwardSpec{{listen: "127.0.0.1:80", target: "127.0.0.1:3210", from: "default"}},
	forwardsFrom: "default",
	autoForward:  true,
	nodePreload:  true,
	dialRetry:    60 * time.Second,
	stopSignal:   unix.SIGINT,
	deathSignal:  unix.SIGKILL,
	grace:        8 * time.Second,
	cleanupGrace: 2 * time.Second,
	program:      []string{"./run_backend.sh"},
}

// fws builds forwards as parse does: from names what asked for them.
func fws(from string, specs ...string) []forwardSpec {
	var out []forwardSpec
	for _, s := range specs {
		l, t, _ := strings.Cut(s, "=")
		out = append(out, forwardSpec{listen: l, target: t, from: from})
	}
	return out
}

func TestParse(t *testing.T) {
	with := func(f func(c *config)) config {
		c := defaults
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want config
	}{
		{"defaults", []string{"--", "./run_backend.sh"}, env(), defaults},
		{"no dashes", []string{"./run_backend.sh"}, env(), defaults},
		{"program args kept, flags after program are its own",
			[]string{"--", "./run_backend.sh", "--port", "1", "-v"}, env(),
			with(func(c *config) { c.program = []string{"./run_backend.sh", "--port", "1", "-v"} })},
		{"forward flag repeated",
			[]string{"--forward", "127.0.0.1:80=127.0.0.1:3210", "--forward=[::1]:80=127.0.0.1:3210", "./run_backend.sh"}, env(),
			with(func(c *config) {
				c.forwards = fws("--forward", "127.0.0.1:80=127.0.0.1:3210", "[::1]:80=127.0.0.1:3210")
				c.forwardsFrom = "--forward"
			})},
		{"forward env list",
			[]string{"./run_backend.sh"}, env("CONVEX_SHIM_FORWARD", "127.0.0.1:8080=127.0.0.1:3210, 127.0.0.1:80=127.0.0.1:3211"),
			with(func(c *config) {
				c.forwards = fws("CONVEX_SHIM_FORWARD", "127.0.0.1:8080=127.0.0.1:3210", "127.0.0.1:80=127.0.0.1:3211")
				c.forwardsFrom = "CONVEX_SHIM_FORWARD"
			})},
		{"forward off", []string{"--forward", "off", "./run_backend.sh"}, env(),
			with(func(c *config) { c.forwards, c.forwardsFrom, c.autoForward = nil, "--forward", false })},
		{"forward off by env", []string{"./run_backend.sh"}, env("CONVEX_SHIM_FORWARD", "off"),
			with(func(c *config) { c.forwards, c.forwardsFrom, c.autoForward = nil, "CONVEX_SHIM_FORWARD", false })},
		{"flag beats env",
			[]string{"--grace", "25s", "--forward", "127.0.0.1:81=127.0.0.1:3210", "./run_backend.sh"},
			env("CONVEX_SHIM_GRACE", "3s", "CONVEX_SHIM_FORWARD", "127.0.0.1:82=127.0.0.1:3210"),
			with(func(c *config) {
				c.grace = 25 * time.Second
				c.forwards, c.forwardsFrom = fws("--forward", "127.0.0.1:81=127.0.0.1:3210"), "--forward"
			})},
		{"public with opt-in flag", []string{"--allow-public", "--forward", "0.0.0.0:80=127.0.0.1:3210", "./run_backend.sh"}, env(),
			with(func(c *config) {
				c.allowPublic = true
				c.forwards, c.forwardsFrom = fws("--forward", "0.0.0.0:80=127.0.0.1:3210"), "--forward"
			})},
		{"public with opt-in env", []string{"./run_backend.sh"},
			env("CONVEX_SHIM_ALLOW_PUBLIC", "1", "CONVEX_SHIM_FORWARD", "[::]:80=127.0.0.1:3210"),
			with(func(c *config) {
				c.allowPublic = true
				c.forwards, c.forwardsFrom = fws("CONVEX_SHIM_FORWARD", "[::]:80=127.0.0.1:3210"), "CONVEX_SHIM_FORWARD"
			})},
		{"one dash and = forms", []string{"-grace=25s", "-dial-retry", "5s", "--verbose=1", "--check=false", "./run_backend.sh"}, env(),
			with(func(c *config) { c.grace, c.dialRetry, c.verbose = 25*time.Second, 5*time.Second, true })},
		{"a lone dash is the program", []string{"-"}, env(),
			with(func(c *config) { c.program = []string{"-"} })},
		{"dial retry flag", []string{"--dial-retry", "5s", "./run_backend.sh"}, env(),
			with(func(c *config) { c.dialRetry = 5 * time.Second })},
		{"dial retry env seconds", []string{"./run_backend.sh"}, env("CONVEX_SHIM_DIAL_RETRY", "90"),
			with(func(c *config) { c.dialRetry = 90 * time.Second })},
		{"stop signal flag", []string{"--stop-signal", "SIGTERM", "./run_backend.sh"}, env(),
			with(func(c *config) { c.stopSignal = unix.SIGTERM })},
		{"stop signal env short lower", []string{"./run_backend.sh"}, env("CONVEX_SHIM_STOP_SIGNAL", "quit"),
			with(func(c *config) { c.stopSignal = unix.SIGQUIT })},
		{"stop signal number", []string{"--stop-signal=15", "./run_backend.sh"}, env(),
			with(func(c *config) { c.stopSignal = unix.SIGTERM })},
		{"grace zero means forever", []string{"--grace", "0", "./run_backend.sh"}, env(),
			with(func(c *config) { c.grace = 0 })},
		{"grace env", []string{"./run_backend.sh"}, env("CONVEX_SHIM_GRACE", "1m30s"),
			with(func(c *config) { c.grace = 90 * time.Second })},
		{"cleanup grace flag", []string{"--cleanup-grace", "500ms", "./run_backend.sh"}, env(),
			with(func(c *config) { c.cleanupGrace = 500 * time.Millisecond })},
		{"cleanup grace env", []string{"./run_backend.sh"}, env("CONVEX_SHIM_CLEANUP_GRACE", "5s"),
			with(func(c *config) { c.cleanupGrace = 5 * time.Second })},
		{"parent death signal flag", []string{"--parent-death-signal", "INT", "./run_backend.sh"}, env(),
			with(func(c *config) { c.deathSignal = unix.SIGINT })},
		{"parent death signal none by env", []string{"./run_backend.sh"}, env("CONVEX_SHIM_PARENT_DEATH_SIGNAL", "none"),
			with(func(c *config) { c.deathSignal = 0 })},
		{"verbose -v", []string{"-v", "./run_backend.sh"}, env(),
			with(func(c *config) { c.verbose = true })},
		{"verbose long", []string{"--verbose", "./run_backend.sh"}, env(),
			with(func(c *config) { c.verbose = true })},
		{"verbose env", []string{"./run_backend.sh"}, env("CONVEX_SHIM_VERBOSE", "true"),
			with(func(c *config) { c.verbose = true })},
		{"verbose flag false beats env", []string{"--verbose=false", "./run_backend.sh"}, env("CONVEX_SHIM_VERBOSE", "1"),
			with(func(c *config) { c.verbose = false })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.args, tc.env)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// Every bad input gives one line that names the setting and the fix.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  func(string) string
		want []string // substrings of the error
	}{
		{[]string{}, env(), []string{"no program", "usage"}},
		{[]string{"--"}, env(), []string{"no program"}},
		{[]string{"--", ""}, env(), []string{"program name is empty"}},
		{[]string{"--nope", "x"}, env(), []string{"unknown flag --nope", "--help"}},
		{[]string{"---grace", "1s", "x"}, env(), []string{"unknown flag ---grace"}},
		{[]string{"--check=maybe"}, env(), []string{"--check", "true or false"}},
		{[]string{"--install"}, env(), []string{"--install needs a value"}},
		{[]string{"--grace"}, env(), []string{"grace", "--help"}},
		{[]string{"--grace", "soon", "x"}, env(), []string{`--grace "soon"`, "8s"}},
		{[]string{"--grace", "-1s", "x"}, env(), []string{"--grace", "negative"}},
		{[]string{"x"}, env("CONVEX_SHIM_GRACE", "1 minute"), []string{"CONVEX_SHIM_GRACE", "8s"}},
		{[]string{"--dial-retry", "0", "x"}, env(), []string{"--dial-retry", "more than zero"}},
		{[]string{"x"}, env("CONVEX_SHIM_DIAL_RETRY", "x"), []string{"CONVEX_SHIM_DIAL_RETRY", "duration"}},
		{[]string{"--cleanup-grace", "0", "x"}, env(), []string{"--cleanup-grace", "more than zero"}},
		{[]string{"x"}, env("CONVEX_SHIM_CLEANUP_GRACE", "-5"), []string{"CONVEX_SHIM_CLEANUP_GRACE"}},
		{[]string{"--stop-signal", "SIGFOO", "x"}, env(), []string{"--stop-signal", "SIGINT"}},
		{[]string{"--stop-signal", "KILL", "x"}, env(), []string{"--stop-signal", "can handle"}},
		{[]string{"--stop-signal", "9", "x"}, env(), []string{"--stop-signal", "can handle"}},
		{[]string{"--stop-signal", "0", "x"}, env(), []string{"--stop-signal"}},
		{[]string{"--stop-signal", "99", "x"}, env(), []string{"--stop-signal"}},
		{[]string{"x"}, env("CONVEX_SHIM_STOP_SIGNAL", "STOP"), []string{"CONVEX_SHIM_STOP_SIGNAL"}},
		{[]string{"--parent-death-signal", "SIGNOPE", "x"}, env(), []string{"--parent-death-signal", "SIGKILL"}},
		{[]string{"x"}, env("CONVEX_SHIM_PARENT_DEATH_SIGNAL", "0"), []string{"CONVEX_SHIM_PARENT_DEATH_SIGNAL"}},
		{[]string{"x"}, env("CONVEX_SHIM_VERBOSE", "loud"), []string{"CONVEX_SHIM_VERBOSE", "true or false"}},
		{[]string{"x"}, env("CONVEX_SHIM_ALLOW_PUBLIC", "sure"), []string{"CONVEX_SHIM_ALLOW_PUBLIC", "true or false"}},
		{[]string{"--forward", "127.0.0.1:80", "x"}, env(), []string{"--forward", "LISTEN=TARGET"}},
		{[]string{"--forward", "127.0.0.1:0=127.0.0.1:3210", "x"}, env(), []string{"--forward", `port "0"`, "1 to 65535"}},
		{[]string{"--forward", "127.0.0.1:65536=127.0.0.1:3210", "x"}, env(), []string{`port "65536"`}},
		{[]string{"--forward", "127.0.0.1:-1=127.0.0.1:3210", "x"}, env(), []string{`port "-1"`}},
		{[]string{"--forward", "127.0.0.1:http=127.0.0.1:3210", "x"}, env(), []string{`port "http"`}},
		{[]string{"--forward", "127.0.0.1:80=127.0.0.1", "x"}, env(), []string{"target address", "host:port"}},
		{[]string{"--forward", "127.0.0.1:80=:3210", "x"}, env(), []string{"target address", "host is empty"}},
		{[]string{"--forward", "localhost:80=127.0.0.1:3210", "x"}, env(), []string{"listen address", "not an IP"}},
		{[]string{"--forward", "::1:80=127.0.0.1:3210", "x"}, env(), []string{"listen address", "[::1]:80"}},
		{[]string{"--forward", "127.0.0.1:80=127.0.0.1:3210", "--forward", "127.0.0.1:80=127.0.0.1:3211", "x"}, env(), []string{"forwarded twice"}},
		{[]string{"--forward", "off", "--forward", "127.0.0.1:80=127.0.0.1:3210", "x"}, env(), []string{"off alone"}},
		{[]string{"--forward", "0.0.0.0:80=127.0.0.1:3210", "x"}, env(), []string{"not a loopback address", "admin API", "--allow-public"}},
		{[]string{"x"}, env("CONVEX_SHIM_FORWARD", "10.1.2.3:80=127.0.0.1:3210"), []string{"CONVEX_SHIM_FORWARD", "not a loopback"}},
		{[]string{"x"}, env("CONVEX_SHIM_FORWARD", ""+"127.0.0.1:80=127.0.0.1:3210,"), []string{"CONVEX_SHIM_FORWARD", "LISTEN=TARGET"}},
	} {
		_, err := parse(tc.args, tc.env)
		if err == nil {
			t.Errorf("parse(%q): no error", tc.args)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("parse(%q): error has several lines: %q", tc.args, msg)
		}
		// The binary's whole answer: exit 2, one line on stderr, nothing started.
		var out, errOut bytes.Buffer
		if code := run(tc.args, tc.env, &out, &errOut); code != exitUsage || errOut.String() != "convex-shim: "+msg+"\n" || out.Len() != 0 {
			t.Errorf("run(%q): exit %d, stderr %q, stdout %q; want exit 2 and one line", tc.args, code, errOut.String(), out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("parse(%q): error %q lacks %q", tc.args, msg, w)
			}
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	// Asked for, help and version answer whatever else is wrong.
	bad := env("CONVEX_SHIM_GRACE", "soon", "CONVEX_SHIM_FORWARD", "nonsense")
	for _, tc := range []struct {
		args []string
		want error
	}{
		{[]string{"--help"}, errHelp},
		{[]string{"-h"}, errHelp},
		{[]string{"-help"}, errHelp},
		{[]string{"--help=true", "--grace", "soon"}, errHelp},
		{[]string{"--version", "--help"}, errHelp},
		{[]string{"--version"}, errVersion},
		{[]string{"-version", "--check", "--stop-signal", "KILL", "x"}, errVersion},
	} {
		if _, err := parse(tc.args, bad); !errors.Is(err, tc.want) {
			t.Errorf("parse(%q) = %v, want %v", tc.args, err, tc.want)
		}
	}
	for _, args := range [][]string{{"--help=false", "x"}, {"--version=0", "x"}} {
		if _, err := parse(args, env()); err != nil {
			t.Errorf("parse(%q) = %v, want a normal start", args, err)
		}
	}
	if _, err := parse([]string{"--help=maybe"}, env()); err == nil || !strings.Contains(err.Error(), `--help "maybe": not a boolean`) {
		t.Errorf("--help=maybe: %v", err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, env(), &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("--help: exit %d, stderr %q", code, errOut.String())
	}
	// --help documents every setting, its alias, its env twin (or that it
	// has none) and its default.
	for _, s := range settings {
		for _, w := range []string{"\n  " + s.synopsis("") + "\n", "      " + s.twinAndDefault() + "\n"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("--help lacks %q", w)
			}
		}
		if s.env != "" && !strings.Contains(out.String(), "env "+s.env+", default "+s.def+"\n") {
			t.Errorf("--help lacks --%s's twin %s and default %q", s.name, s.env, s.def)
		}
	}
	for _, w := range []string{"126", "127", "128+N", "Exit codes", "-h, --help\n", "-v, --verbose\n", "no env twin, no default\n"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	out.Reset()
	if code := run([]string{"--version"}, env(), &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "convex-shim ") {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
}

func TestUsageErrorExitCode(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--grace", "x", "--", "true"}, env(), &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if got := errOut.String(); !strings.HasPrefix(got, "convex-shim: ") || strings.Count(got, "\n") != 1 || out.Len() != 0 {
		t.Fatalf("want one line on stderr, nothing on stdout; got %q / %q", got, out.String())
	}
}

// The table's own rules, so that a new entry cannot break --help, the
// parser or the twin convention unnoticed.
func TestConfigTable(t *testing.T) {
	names := map[string]bool{}
	var twinless []string
	for _, s := range settings {
		for _, n := range []string{s.name, s.short} {
			if n != "" && names[n] {
				t.Errorf("flag %q defined twice", n)
			}
			names[n] = true
		}
		if !regexp.MustCompile(`^[a-z][a-z-]*[a-z]$`).MatchString(s.name) || len(s.short) > 1 {
			t.Errorf("%q: want a lowercase name with dashes and at most a one-letter alias, got %q", s.name, s.short)
		}
		switch want := "CONVEX_SHIM_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_")); s.env {
		case "":
			twinless = append(twinless, s.name)
		case want:
		default:
			t.Errorf("--%s: env twin %s, want %s", s.name, s.env, want)
		}
		if (s.kind == switchKind) != (s.arg == "") {
			t.Errorf("--%s: a switch has no argument name and every other flag has one (kind %d, arg %q)", s.name, s.kind, s.arg)
		}
		if s.usage == "" || strings.Contains(s.usage, "\n") {
			t.Errorf("--%s: usage %q: want one paragraph", s.name, s.usage)
		}
		// Every default is valid: the binary must start with nothing set.
		var c config
		if err := s.apply(&c, s.def, "default"); err != nil {
			t.Errorf("--%s: default %q: %v", s.name, s.def, err)
		}
	}
	// Only the modes that replace the normal run have no twin (see settings).
	if want := []string{"help", "version", "check", "install"}; !reflect.DeepEqual(twinless, want) {
		t.Errorf("flags without an env twin: %q, want %q", twinless, want)
	}
}

// Every flag in every spelling package flag accepts: one or two dashes, the
// short alias, a value after = or as the next argument, a switch alone or
// with =false, and a switch never taking the next argument as its value.
func TestParseEveryFlagForm(t *testing.T) {
	for _, s := range settings {
		spellings := []string{"-" + s.name, "--" + s.name}
		if s.short != "" {
			spellings = append(spellings, "-"+s.short, "--"+s.short)
		}
		for _, f := range spellings {
			type form struct {
				args    []string
				want    []string // the values collected
				program []string
			}
			var forms []form
			if s.kind == switchKind {
				forms = []form{
					{[]string{f, "x"}, []string{"true"}, []string{"x"}},
					{[]string{f + "=false", "x"}, []string{"false"}, []string{"x"}},
					{[]string{f + "=1", "--", "x"}, []string{"1"}, []string{"x"}},
					{[]string{f, "false", "x"}, []string{"true"}, []string{"false", "x"}},
				}
			} else {
				forms = []form{
					{[]string{f, "v", "x"}, []string{"v"}, []string{"x"}},
					{[]string{f + "=v", "x"}, []string{"v"}, []string{"x"}},
					{[]string{f + "=a=b", "x"}, []string{"a=b"}, []string{"x"}},
					{[]string{f + "=", "x"}, []string{""}, []string{"x"}},
					{[]string{f, "-v", "x"}, []string{"-v"}, []string{"x"}}, // a value may start with a dash
					{[]string{f, "a", f, "b", "x"}, []string{"a", "b"}, []string{"x"}},
				}
			}
			for _, fm := range forms {
				given, program, err := parseFlags(fm.args)
				if err != nil || !reflect.DeepEqual(given[s.name], fm.want) || !reflect.DeepEqual(program, fm.program) || len(given) != 1 {
					t.Errorf("parseFlags(%q) = %q, program %q, %v; want %s %q, program %q", fm.args, given, program, err, s.name, fm.want, fm.program)
				}
			}
		}
	}
}

// Where the flags end, and what the parser says about arguments it cannot
// read: one line naming the argument as typed and the fix.
func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		given   map[string][]string
		program []string
		err     string // the whole message, after parse's "convex-shim: "
	}{
		{args: []string{"x", "--grace", "1s"}, given: map[string][]string{}, program: []string{"x", "--grace", "1s"}},
		{args: []string{"--grace", "1s", "--", "-v", "x"}, given: map[string][]string{"grace": {"1s"}}, program: []string{"-v", "x"}},
		{args: []string{"--", "--"}, given: map[string][]string{}, program: []string{"--"}},
		{args: []string{"-v", "--"}, given: map[string][]string{"verbose": {"true"}}, program: []string{}},
		{args: []string{"-"}, given: map[string][]string{}, program: []string{"-"}},
		{args: []string{"", "-v"}, given: map[string][]string{}, program: []string{"", "-v"}},
		{args: []string{"--forward", "off", "--forward=127.0.0.1:81=127.0.0.1:3210", "-forward", "y", "x"},
			given: map[string][]string{"forward": {"off", "127.0.0.1:81=127.0.0.1:3210", "y"}}, program: []string{"x"}},
		{args: []string{"--install", "--verbose"}, given: map[string][]string{"install": {"--verbose"}}, program: []string{}},
		{args: []string{"--nope", "x"}, err: "unknown flag --nope; run convex-shim --help for the flags"},
		{args: []string{"-v", "-nope=1", "x"}, err: "unknown flag -nope=1; run convex-shim --help for the flags"},
		{args: []string{"---grace", "1s", "x"}, err: "unknown flag ---grace; run convex-shim --help for the flags"},
		{args: []string{"-v", "--=x", "x"}, err: "unknown flag --=x; run convex-shim --help for the flags"},
		{args: []string{"--nope", "---x"}, err: "unknown flag --nope; run convex-shim --help for the flags"},
		{args: []string{"--forward", "--nope", "---x"}, err: "unknown flag ---x; run convex-shim --help for the flags"},
		{args: []string{"-v", "--grace"}, err: "flag --grace needs a value; run convex-shim --help for the flags"},
		{args: []string{"-install"}, err: "flag -install needs a value; run convex-shim --help for the flags"},
	} {
		given, program, err := parseFlags(tc.args)
		if tc.err != "" {
			_, perr := parse(tc.args, env())
			if err == nil || perr == nil || perr.Error() != tc.err {
				t.Errorf("parse(%q): error %v, want %q", tc.args, perr, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(given, tc.given) || !reflect.DeepEqual(program, tc.program) {
			t.Errorf("parseFlags(%q) = %q, %q, %v; want %q, %q", tc.args, given, program, err, tc.given, tc.program)
		}
	}
}

// A flag beats its twin and the twin beats the default, for every setting;
// an empty twin counts as unset; a list's flags join, any other's last wins.
func TestConfigPrecedence(t *testing.T) {
	for _, s := range settings {
		from := func(flags []string, getenv func(string) string, wantV, wantFrom string) {
			t.Helper()
			if v, f := s.value(flags, getenv); v != wantV || f != wantFrom {
				t.Errorf("--%s: value(%q) = %q from %s, want %q from %s", s.name, flags, v, f, wantV, wantFrom)
			}
		}
		from(nil, env(), s.def, "default")
		from(nil, env(s.env, ""), s.def, "default")
		if s.env != "" {
			from(nil, env(s.env, "e"), "e", s.env)
		} else {
			// No twin: a variable that looks like one is not read.
			name := "CONVEX_SHIM_" + strings.ToUpper(s.name)
			from(nil, env(name, "e"), s.def, "default")
		}
		want := "b"
		if s.kind == listKind {
			want = "a,b"
		}
		from([]string{"a", "b"}, env(s.env, "e"), want, "--"+s.name)
	}
}

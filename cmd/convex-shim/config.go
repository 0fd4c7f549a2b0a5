package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/convex-shim/convex-shim/forward"
	"github.com/convex-shim/convex-shim/preload"
	"github.com/convex-shim/convex-shim/shim"
	"golang.org/x/sys/unix"
)

// config is everything the operator can set, validated.
type config struct {
	forwards     []forwardSpec
	forwardsFrom string // where forwards came from, for error messages
	autoForward  bool
	notices      []notice // what the origins mean, logged once at startup
	check        bool     // probe the forwards instead of running a program
	installDir   string   // copy the binary there instead of running a program
	allowPublic  bool
	dialRetry    time.Duration
	stopSignal   unix.Signal
	deathSignal  unix.Signal // 0: none
	grace        time.Duration
	cleanupGrace time.Duration
	verbose      bool
	program      []string // program and its arguments

	nodePreload bool            // give Node the fetch preload (preload.go)
	nodeRoutes  []preload.Route // what it routes, from the origins (setNodeRoutes)
}

type forwardSpec struct {
	listen, target string
	from           string // what asked for it: a flag, an env twin, an origin, "default"
	optional       bool   // skipped if the address does not exist ([::1] without IPv6)
}

func (f forwardSpec) String() string { return f.listen + "=" + f.target }

type notice struct {
	text  string
	debug bool // routine: logged only with -v
}

// kind is how a flag takes its value on the command line.
type kind int

const (
	switchKind kind = iota // --name alone is true, --name=false turns it off; the next argument is never its value
	valueKind              // --name VALUE or --name=VALUE; given twice, the last one wins
	listKind               // a value that may be repeated; the values join with commas, as the env twin lists them
)

// setting is one operator knob: a flag, its short alias, its environment
// twin and its default. The settings table is the single source for the
// parser, --help, the package doc and the README's usage table
// (TestDocsMatchSettings fails when a document differs from the table;
// go generate rewrites both), so adding a setting is one entry here.
type setting struct {
	name  string // the flag, given with one or two dashes
	short string // a one-letter alias, or ""
	env   string // the CONVEX_SHIM_* twin, or "" for none (see settings)
	kind  kind
	arg   string // what the value is, for --help; "" for a switch
	def   string // used when neither the flag nor the twin is given; "" for none
	usage string
	// apply validates v and sets it in c; from is where v came from (a
	// flag, the twin, "default"), for the messages of later checks.
	apply func(c *config, v, from string) error
}

// settings apply in this order. --help and --version come first: asked for,
// they answer whatever else is wrong. They, --check and --install have no
// env twin on purpose: each replaces the normal run, so set in an image's
// environment it would keep every container from starting the backend.
var settings = []setting{
	{
		name: "help", short: "h", env: "", kind: switchKind, def: "false",
		usage: "print this help and exit 0",
		apply: func(_ *config, v, _ string) error { return ask(v, errHelp) },
	},
	{
		name: "version", env: "", kind: switchKind, def: "false",
		usage: "print the version and exit 0",
		apply: func(_ *config, v, _ string) error { return ask(v, errVersion) },
	},
	{
		name: "forward", env: "CONVEX_SHIM_FORWARD", kind: listKind, arg: "LISTEN=TARGET",
		def:   "127.0.0.1:80=127.0.0.1:3210",
		usage: "forward connections on LISTEN to TARGET, both host:port; repeat the flag (or separate with commas in the env twin) for more; \"off\" for no forwards at all, automatic ones included",
		apply: applyForwards,
	},
	{
		name: "auto-forward", env: "CONVEX_SHIM_AUTO_FORWARD", kind: switchKind, def: "true",
		usage: "also forward the loopback address and port that CONVEX_CLOUD_ORIGIN (to 3210) and CONVEX_SITE_ORIGIN (to 3211) name, where the backend does not listen itself",
		apply: func(c *config, v, _ string) (err error) { c.autoForward, err = parseBool(v); return },
	},
	{
		name: "node-preload", env: "CONVEX_SHIM_NODE_PRELOAD", kind: switchKind, def: "true",
		usage: "add to the backend's NODE_OPTIONS a preload (no file) that sends Node's fetch calls to CONVEX_CLOUD_ORIGIN to 127.0.0.1:3210 and to CONVEX_SITE_ORIGIN to 127.0.0.1:3211, inside the container, public https origins included; node:https, axios and other clients in user code still go to the origin",
		apply: func(c *config, v, _ string) (err error) { c.nodePreload, err = parseBool(v); return },
	},
	{
		name: "allow-public", env: "CONVEX_SHIM_ALLOW_PUBLIC", kind: switchKind, def: "false",
		usage: "allow a forward to listen on a non-loopback address; it exposes the backend's admin API to that network",
		apply: func(c *config, v, _ string) (err error) { c.allowPublic, err = parseBool(v); return },
	},
	{
		name: "dial-retry", env: "CONVEX_SHIM_DIAL_RETRY", kind: valueKind, arg: "DURATION", def: "60s",
		usage: "how long a forwarded connection waits for the backend to accept before it is closed",
		apply: func(c *config, v, _ string) (err error) { c.dialRetry, err = parseDuration(v, false); return },
	},
	{
		name: "stop-signal", env: "CONVEX_SHIM_STOP_SIGNAL", kind: valueKind, arg: "SIGNAL", def: "SIGINT",
		usage: "the signal a stop request (SIGTERM, SIGINT or SIGQUIT) becomes; the Convex backend drains only on SIGINT",
		apply: func(c *config, v, _ string) (err error) { c.stopSignal, err = parseSignal(v); return },
	},
	{
		name: "grace", env: "CONVEX_SHIM_GRACE", kind: valueKind, arg: "DURATION", def: shim.DefaultGrace.String(),
		usage: "after the first stop request, SIGKILL the backend's process group once this has passed; keep it below the platform's stop timeout; 0 waits forever",
		apply: func(c *config, v, _ string) (err error) { c.grace, err = parseDuration(v, true); return },
	},
	{
		name: "cleanup-grace", env: "CONVEX_SHIM_CLEANUP_GRACE", kind: valueKind, arg: "DURATION", def: shim.DefaultCleanupGrace.String(),
		usage: "after the backend exits, how long its leftover processes get between SIGTERM and SIGKILL",
		apply: func(c *config, v, _ string) (err error) { c.cleanupGrace, err = parseDuration(v, false); return },
	},
	{
		name: "parent-death-signal", env: "CONVEX_SHIM_PARENT_DEATH_SIGNAL", kind: valueKind, arg: "SIGNAL", def: "SIGKILL",
		usage: "when convex-shim is not PID 1 and dies without cleaning up (SIGKILL, OOM), the kernel sends this to the backend, so no backend runs on with its forwards gone; \"none\" to let it run",
		apply: func(c *config, v, _ string) (err error) {
			if strings.EqualFold(v, "none") {
				c.deathSignal = 0
				return nil
			}
			c.deathSignal, err = parseSignalAny(v)
			return
		},
	},
	{
		name: "verbose", short: "v", env: "CONVEX_SHIM_VERBOSE", kind: switchKind, def: "false",
		usage: "log each connection, signal and reaped process (to stderr)",
		apply: func(c *config, v, _ string) (err error) { c.verbose, err = parseBool(v); return },
	},
	{
		name: "check", env: "", kind: switchKind, def: "false",
		usage: "print the routing table and probe every forward end to end (GET /version through its listen address); exit 0 if all answer, 1 if not. Reads the same flags and environment as a normal start, so use it as a Docker HEALTHCHECK or Kubernetes exec probe; no program is needed",
		apply: func(c *config, v, _ string) (err error) { c.check, err = parseBool(v); return },
	},
	{
		name: "install", env: "", kind: valueKind, arg: "DIR", def: "",
		usage: "copy this binary to DIR/convex-shim and exit: how the shim-only image (FROM scratch) puts it on a volume shared with a stock backend container; no program is needed",
		apply: func(c *config, v, _ string) error { c.installDir = v; return nil },
	},
}

// errHelp and errVersion are not failures: main prints and exits 0.
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// ask is the apply of --help and --version: asked for, it ends parsing with
// answer, which main prints.
func ask(v string, answer error) error {
	on, err := parseBool(v)
	if on {
		return answer
	}
	return err
}

// parse reads flags, then their environment twins, then defaults, in that
// order of precedence. It never reads the process's environment itself.
func parse(args []string, getenv func(string) string) (config, error) {
	given, rest, err := parseFlags(args)
	if err != nil {
		return config{}, fmt.Errorf("%v; run convex-shim --help for the flags", err)
	}
	var c config
	for _, s := range settings {
		v, from := s.value(given[s.name], getenv)
		if err := s.apply(&c, v, from); err != nil {
			return config{}, fmt.Errorf("%s %q: %w", from, v, err)
		}
	}
	if c.forwards == nil {
		c.autoForward = false // "off" means no forwards at all
	}
	addOriginForwards(&c, getenv)
	setNodeRoutes(&c, getenv)
	if !c.allowPublic {
		for _, f := range c.forwards {
			if !forward.IsLoopback(f.listen) {
				return config{}, fmt.Errorf("%s %q: %s is not a loopback address and would expose the backend's admin API; listen on 127.0.0.1, or add --allow-public (CONVEX_SHIM_ALLOW_PUBLIC=1) if you mean it", c.forwardsFrom, f, f.listen)
			}
		}
	}
	c.program = rest
	if c.check || c.installDir != "" {
		return c, nil // modes that run no program
	}
	if len(c.program) == 0 {
		return config{}, errors.New("no program to run; usage: convex-shim [flags] -- program [args...]")
	}
	if c.program[0] == "" {
		return config{}, errors.New("program name is empty; usage: convex-shim [flags] -- program [args...]")
	}
	return c, nil
}

// value is what s is set to and where that came from: the flag (a list's
// values joined, otherwise the last one given), else the env twin if it is
// set and not empty, else the default.
func (s setting) value(flags []string, getenv func(string) string) (v, from string) {
	switch {
	case len(flags) > 0 && s.kind == listKind:
		return strings.Join(flags, ","), "--" + s.name
	case len(flags) > 0:
		return flags[len(flags)-1], "--" + s.name
	case s.env != "" && getenv(s.env) != "":
		return getenv(s.env), s.env
	}
	return s.def, "default"
}

// parseFlags splits the command line into each setting's flag values, as
// given, and the program with its arguments: package flag's syntax, which
// stops at the first argument that is not a flag or after "--". The values
// are only collected here; the settings' apply validates them once the twins
// are known, so that every error names where its value came from.
func parseFlags(args []string) (given map[string][]string, program []string, err error) {
	given = map[string][]string{}
	fs := flag.NewFlagSet("convex-shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reworded below; --help is usage()
	fs.Usage = func() {}
	for _, s := range settings {
		collect := func(v string) error {
			given[s.name] = append(given[s.name], v)
			return nil
		}
		for _, name := range []string{s.name, s.short} {
			switch {
			case name == "":
			case s.kind == switchKind:
				fs.BoolFunc(name, s.usage, collect)
			default:
				fs.Func(name, s.usage, collect)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, flagError(fs, err, args)
	}
	return given, fs.Args(), nil
}

// flagError names, in one line, the argument package flag stopped at: its
// own messages spell every flag with one dash, whatever was typed, and name
// no fix. flag stops after an argument it cannot use (an unknown name, or a
// value flag that ends the command line; the collectors never fail), or
// before one that is no flag at all, such as "---x", which it reports as
// "bad flag syntax".
func flagError(fs *flag.FlagSet, err error, args []string) error {
	i := len(args) - len(fs.Args()) - 1
	if strings.HasPrefix(err.Error(), "bad flag syntax") {
		i++
	}
	if i < 0 || i >= len(args) { // flag stopped nowhere: say what it said
		return fmt.Errorf("bad command line: %w", err)
	}
	a := args[i]
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
	if fs.Lookup(name) != nil {
		return fmt.Errorf("flag %s needs a value", a)
	}
	return fmt.Errorf("unknown flag %s", a)
}

func applyForwards(c *config, v, from string) error {
	c.forwards, c.forwardsFrom = nil, from
	if strings.TrimSpace(v) == "off" {
		return nil
	}
	seen := map[string]bool{}
	for _, spec := range strings.Split(v, ",") {
		f, err := parseForward(strings.TrimSpace(spec))
		if err != nil {
			return err
		}
		f.from = c.forwardsFrom
		if seen[f.listen] {
			return fmt.Errorf("%s is forwarded twice; give each listen address once", f.listen)
		}
		seen[f.listen] = true
		c.forwards = append(c.forwards, f)
	}
	return nil
}

// parseForward reads LISTEN=TARGET. The listen host must be an IP literal,
// so whether it is loopback never depends on name resolution.
func parseForward(spec string) (forwardSpec, error) {
	listen, target, ok := strings.Cut(spec, "=")
	if !ok || spec == "off" {
		return forwardSpec{}, fmt.Errorf("want LISTEN=TARGET such as 127.0.0.1:80=127.0.0.1:3210, or off alone")
	}
	if err := checkHostPort(listen, true); err != nil {
		return forwardSpec{}, fmt.Errorf("listen address %q: %w", listen, err)
	}
	if err := checkHostPort(target, false); err != nil {
		return forwardSpec{}, fmt.Errorf("target address %q: %w", target, err)
	}
	return forwardSpec{listen: listen, target: target}, nil
}

func checkHostPort(addr string, ipOnly bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port such as 127.0.0.1:80 ([::1]:80 for IPv6)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		return errors.New("host is empty; name an address such as 127.0.0.1")
	}
	if ipOnly && net.ParseIP(host) == nil {
		return fmt.Errorf("host %q is not an IP address; use 127.0.0.1 or ::1", host)
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("not a boolean; use true or false (1 or 0)")
}

// parseDuration accepts Go durations ("8s", "1m30s") and plain seconds ("8").
func parseDuration(v string, zeroOK bool) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseUint(v, 10, 32)
		if nerr != nil {
			return 0, errors.New("not a duration; use a value such as 8s, 500ms or 2m")
		}
		d = time.Duration(n) * time.Second
	}
	switch {
	case d < 0:
		return 0, errors.New("must not be negative")
	case d == 0 && !zeroOK:
		return 0, errors.New("must be more than zero")
	}
	return d, nil
}

// parseSignal accepts SIGINT, INT, int (any case) or a number, of a signal
// that a program can handle.
func parseSignal(v string) (unix.Signal, error) {
	s, err := parseSignalAny(v)
	if err == nil && (s == unix.SIGKILL || s == unix.SIGSTOP) {
		return 0, errors.New("not a signal a program can handle; use a name such as SIGINT or SIGTERM")
	}
	return s, err
}

// parseSignalAny is parseSignal that also takes SIGKILL and SIGSTOP.
func parseSignalAny(v string) (unix.Signal, error) {
	name := strings.ToUpper(v)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	s := unix.SignalNum(name)
	if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
		s = unix.Signal(n)
	}
	if s == 0 {
		return 0, errors.New("not a signal; use a name such as SIGINT, SIGTERM or SIGKILL, or a number")
	}
	return s, nil
}

// synopsis is how --help and the documents spell the flag: "-v, --verbose",
// "--grace DURATION", "--forward LISTEN=TARGET (repeatable)"; q quotes each
// spelling (Markdown's "`" in the README).
func (s setting) synopsis(q string) string {
	name := q + "--" + s.name
	if s.arg != "" {
		name += " " + s.arg
	}
	name += q
	if s.short != "" {
		name = q + "-" + s.short + q + ", " + name
	}
	if s.kind == listKind {
		name += " (repeatable)"
	}
	return name
}

// twinAndDefault is the line under each flag in --help.
func (s setting) twinAndDefault() string {
	twin, def := "env "+s.env, "default "+s.def
	if s.env == "" {
		twin = "no env twin"
	}
	if s.def == "" {
		def = "no default"
	}
	return twin + ", " + def
}

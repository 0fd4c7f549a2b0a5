package main

import (
	"errors"
	"fmt"
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
	nodeRoutes  []preload.Route // what it routes; set by setNodeRoutes
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

// setting is one operator knob: a flag, its environment twin and its
// default. The list below is the single source for parsing and --help.
type setting struct {
	name, env, def, arg, usage string
	bool                       bool // a switch: --name alone means true
	apply                      func(c *config, v string) error
}

var settings = []setting{
	{
		name: "forward", env: "CONVEX_SHIM_FORWARD", arg: "LISTEN=TARGET",
		def:   "127.0.0.1:80=127.0.0.1:3210",
		usage: "forward connections on LISTEN to TARGET, both host:port; repeat the flag (or separate with commas in the env twin) for more; \"off\" for no forwards at all, automatic ones included",
		apply: applyForwards,
	},
	{
		name: "auto-forward", env: "CONVEX_SHIM_AUTO_FORWARD", bool: true, def: "true",
		usage: "also forward the loopback address and port that CONVEX_CLOUD_ORIGIN (to 3210) and CONVEX_SITE_ORIGIN (to 3211) name, where the backend does not listen itself",
		apply: func(c *config, v string) (err error) { c.autoForward, err = parseBool(v); return },
	},
	{
		name: "node-preload", env: "CONVEX_SHIM_NODE_PRELOAD", bool: true, def: "true",
		usage: "add to the backend's NODE_OPTIONS a preload (no file) that sends Node's fetch calls to CONVEX_CLOUD_ORIGIN to 127.0.0.1:3210 and to CONVEX_SITE_ORIGIN to 127.0.0.1:3211, inside the container, public https origins included; node:https, axios and other clients in user code still go to the origin",
		apply: func(c *config, v string) (err error) { c.nodePreload, err = parseBool(v); return },
	},
	{
		name: "allow-public", env: "CONVEX_SHIM_ALLOW_PUBLIC", bool: true, def: "false",
		usage: "allow a forward to listen on a non-loopback address; it exposes the backend's admin API to that network",
		apply: func(c *config, v string) (err error) { c.allowPublic, err = parseBool(v); return },
	},
	{
		name: "dial-retry", env: "CONVEX_SHIM_DIAL_RETRY", arg: "DURATION", def: "60s",
		usage: "how long a forwarded connection waits for the backend to accept before it is closed",
		apply: func(c *config, v string) (err error) { c.dialRetry, err = parseDuration(v, false); return },
	},
	{
		name: "stop-signal", env: "CONVEX_SHIM_STOP_SIGNAL", arg: "SIGNAL", def: "SIGINT",
		usage: "the signal a stop request (SIGTERM, SIGINT or SIGQUIT) becomes; the Convex backend drains only on SIGINT",
		apply: func(c *config, v string) (err error) { c.stopSignal, err = parseSignal(v); return },
	},
	{
		name: "grace", env: "CONVEX_SHIM_GRACE", arg: "DURATION", def: shim.DefaultGrace.String(),
		usage: "after the first stop request, SIGKILL the backend's process group once this has passed; keep it below the platform's stop timeout; 0 waits forever",
		apply: func(c *config, v string) (err error) { c.grace, err = parseDuration(v, true); return },
	},
	{
		name: "cleanup-grace", env: "CONVEX_SHIM_CLEANUP_GRACE", arg: "DURATION", def: shim.DefaultCleanupGrace.String(),
		usage: "after the backend exits, how long its leftover processes get between SIGTERM and SIGKILL",
		apply: func(c *config, v string) (err error) { c.cleanupGrace, err = parseDuration(v, false); return },
	},
	{
		name: "parent-death-signal", env: "CONVEX_SHIM_PARENT_DEATH_SIGNAL", arg: "SIGNAL", def: "SIGKILL",
		usage: "when convex-shim is not PID 1 and dies without cleaning up (SIGKILL, OOM), the kernel sends this to the backend, so no backend runs on with its forwards gone; \"none\" to let it run",
		apply: func(c *config, v string) (err error) {
			if strings.EqualFold(v, "none") {
				c.deathSignal = 0
				return nil
			}
			c.deathSignal, err = parseSignalAny(v)
			return
		},
	},
	{
		name: "verbose", env: "CONVEX_SHIM_VERBOSE", bool: true, def: "false",
		usage: "log each connection, signal and reaped process (to stderr)",
		apply: func(c *config, v string) (err error) { c.verbose, err = parseBool(v); return },
	},
}

// errHelp and errVersion are not failures: main prints and exits 0.
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// parse reads flags, then their environment twins, then defaults, in that
// order of precedence. It never reads the process's environment itself.
func parse(args []string, getenv func(string) string) (config, error) {
	given, rest, err := scanArgs(args)
	if err != nil {
		return config{}, fmt.Errorf("%v; run convex-shim --help for the flags", err)
	}
	modes := map[string]bool{}
	for _, m := range []string{"help", "version", "check"} {
		if v := given[m]; len(v) > 0 {
			on, err := parseBool(v[len(v)-1])
			if err != nil {
				return config{}, fmt.Errorf("--%s %q: %w", m, v[len(v)-1], err)
			}
			modes[m] = on
		}
	}
	if modes["help"] {
		return config{}, errHelp
	}
	if modes["version"] {
		return config{}, errVersion
	}

	var c config
	for _, s := range settings {
		vals, source := given[s.name], "--"+s.name
		if len(vals) == 0 {
			if v := getenv(s.env); v != "" {
				vals, source = []string{v}, s.env
			} else {
				vals, source = []string{s.def}, "default"
			}
		}
		if s.name == "forward" {
			vals = []string{strings.Join(vals, ",")}
		} else {
			vals = vals[len(vals)-1:] // the last one wins, as with any flag
		}
		if s.name == "forward" {
			c.forwardsFrom = source
		}
		if err := s.apply(&c, vals[0]); err != nil {
			return config{}, fmt.Errorf("%s %q: %w", source, vals[0], err)
		}
	}
	if c.forwards == nil {
		c.autoForward = false // "off" means no forwards at all
	}
	addOriginForwards(&c, getenv)
	if !c.allowPublic {
		for _, f := range c.forwards {
			if !forward.IsLoopback(f.listen) {
				return config{}, fmt.Errorf("%s %q: %s is not a loopback address and would expose the backend's admin API; listen on 127.0.0.1, or add --allow-public (CONVEX_SHIM_ALLOW_PUBLIC=1) if you mean it", c.forwardsFrom, f, f.listen)
			}
		}
	}
	c.check, c.program = modes["check"], rest
	if v := given["install"]; len(v) > 0 {
		c.installDir = v[len(v)-1]
	}
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

// scanArgs splits the command line into flag values by name and the
// program with its arguments. Flags take one or two dashes, and a value as
// --name=value or --name value; switches take =true/=false or nothing. The
// first argument that is not a flag, or everything after "--", is the
// program. (Hand-written, not package flag: flag's use of reflection keeps
// about 220 KB of otherwise dead methods in the binary.)
func scanArgs(args []string) (given map[string][]string, rest []string, err error) {
	given = map[string][]string{}
	takesValue := map[string]bool{"install": true}
	switches := map[string]bool{"help": true, "version": true, "check": true}
	for _, s := range settings {
		takesValue[s.name], switches[s.name] = !s.bool, s.bool
	}
	alias := map[string]string{"h": "help", "v": "verbose"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return given, args[i+1:], nil
		}
		if len(a) < 2 || a[0] != '-' {
			return given, args[i:], nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if n, ok := alias[name]; ok {
			name = n
		}
		switch {
		case switches[name]:
			if !hasValue {
				value = "true"
			}
		case takesValue[name]:
			if !hasValue {
				if i+1 == len(args) {
					return nil, nil, fmt.Errorf("flag %s needs a value", a)
				}
				i++
				value = args[i]
			}
		default:
			return nil, nil, fmt.Errorf("unknown flag %s", a)
		}
		given[name] = append(given[name], value)
	}
	return given, nil, nil
}

func applyForwards(c *config, v string) error {
	c.forwards = nil
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

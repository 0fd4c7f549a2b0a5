// Command convex-shim is the ENTRYPOINT of a self-hosted Convex backend image.
// It is PID 1 (or a subreaper under another init), forwards 127.0.0.1:80 to
// the backend's port 3210 so that Node actions can call back, turns the
// platform's SIGTERM into the one SIGINT the backend drains on, reaps
// orphans, and exits with the backend's status.
//
// Usage:
//
//	convex-shim [flags] [--] program [args...]
//
// In an image: ENTRYPOINT ["/usr/local/bin/convex-shim", "--", "./run_backend.sh"].
// This file only parses, validates and wires; the work is in packages
// forward and shim.
//
// # Settings
//
// Flags take one or two dashes. A flag beats its environment twin, and
// either beats the default. --help, --version, --check and --install have no
// twin: each replaces the normal run, so set in an image's environment it
// would keep the backend from ever starting. convex-shim --help says what
// each one does, and the exit codes. This list is generated from the table
// in config.go by go generate:
//
//	flag                                  env twin                         default
//	-h, --help                            none                             false
//	--version                             none                             false
//	--forward LISTEN=TARGET (repeatable)  CONVEX_SHIM_FORWARD              127.0.0.1:80=127.0.0.1:3210
//	--auto-forward                        CONVEX_SHIM_AUTO_FORWARD         true
//	--node-preload                        CONVEX_SHIM_NODE_PRELOAD         true
//	--allow-public                        CONVEX_SHIM_ALLOW_PUBLIC         false
//	--dial-retry DURATION                 CONVEX_SHIM_DIAL_RETRY           60s
//	--stop-signal SIGNAL                  CONVEX_SHIM_STOP_SIGNAL          SIGINT
//	--grace DURATION                      CONVEX_SHIM_GRACE                8s
//	--cleanup-grace DURATION              CONVEX_SHIM_CLEANUP_GRACE        2s
//	--parent-death-signal SIGNAL          CONVEX_SHIM_PARENT_DEATH_SIGNAL  SIGKILL
//	-v, --verbose                         CONVEX_SHIM_VERBOSE              false
//	--check                               none                             false
//	--install DIR                         none                             none
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convex-shim/convex-shim/forward"
	"github.com/convex-shim/convex-shim/preload"
	"github.com/convex-shim/convex-shim/shim"
	"golang.org/x/sys/unix"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes of the shim's own failures; see --help.
const (
	exitSetup = 1 // a forward could not listen; nothing was started
	exitUsage = 2 // bad flag, environment value or missing program
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// Until the program is started nothing waits on a log write, so the
	// first errors go straight to stderr; from the start on, lineLogger.
	early := log.New(stderr, "convex-shim: ", 0)
	cfg, err := parse(args, getenv)
	switch {
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage())
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(stdout, "convex-shim", versionString())
		return 0
	case err != nil:
		early.Print(err)
		return exitUsage
	}

	if cfg.check {
		return runCheck(cfg, stdout)
	}
	if cfg.installDir != "" {
		dst, err := install(cfg.installDir)
		if err != nil {
			early.Print(err)
			return exitSetup
		}
		fmt.Fprintf(stdout, "convex-shim %s installed as %s\n", versionString(), dst)
		return 0
	}

	// Take stop requests from here on: a SIGTERM while the ports are being
	// bound must not meet the Go runtime's default action (exit 2 as PID 1).
	// The subscription completes while the ports are bound; see Subscribe.
	sup := &shim.Supervisor{
		Args:              cfg.program,
		StopSignal:        cfg.stopSignal,
		Grace:             cfg.grace,
		CleanupGrace:      cfg.cleanupGrace,
		ParentDeathSignal: cfg.deathSignal,
	}
	if sup.Grace == 0 {
		sup.Grace = -1 // the flag's 0 means "never"; the package's zero means "default"
	}
	sup.Subscribe()

	logger := newLineLogger(stderr)
	defer logger.Close(time.Second)
	// A missing program is reported before any port is bound; Run then
	// starts what was found, without searching PATH again.
	sup.Env = shim.Environ()
	if len(cfg.nodeRoutes) > 0 {
		sup.Env = preload.SetEnv(sup.Env, cfg.nodeRoutes)
	}
	path, err := shim.LookPath(cfg.program[0], sup.Env)
	if err != nil {
		return startFailed(logger, err)
	}
	sup.Path = path
	var debugLog shim.Logger
	if cfg.verbose {
		debugLog = logger
	}
	for _, n := range cfg.notices {
		if !n.debug {
			logger.Print(n.text)
		} else if debugLog != nil {
			debugLog.Printf("%s", n.text)
		}
	}

	// Every listener is bound before the backend starts, so its first Node
	// action can never find the port closed.
	var proxies []*forward.Proxy
	closeProxies := func() {
		for _, p := range proxies {
			p.Close()
		}
		proxies = nil
	}
	defer closeProxies()
	for _, f := range cfg.forwards {
		p := &forward.Proxy{Listen: f.listen, Target: f.target, DialRetry: cfg.dialRetry, Log: logger, Debug: debugLog}
		if err := p.Start(); err != nil {
			if f.optional && isAddrMissing(err) {
				logf(debugLog, "skipping %s from %s: %v", f.listen, f.from, err)
				continue
			}
			logger.Print(err)
			return exitSetup
		}
		proxies = append(proxies, p)
	}

	logger.Print(summary(cfg))
	sup.Log, sup.Debug = logger, debugLog
	// Forwarding goes on while the backend drains (its callbacks need it)
	// and stops once it has exited, before leftovers are cleaned up.
	sup.Exited = func(int) { closeProxies() }
	status, err := sup.Run()
	if err != nil {
		return startFailed(logger, err)
	}
	return status
}

// lineLogger writes each message as one line with the shim's prefix. It
// never blocks its caller: lines go through a buffer to a writer goroutine,
// and when stderr is not being read (a blocking log driver behind a slow
// sink, a terminal paused with Ctrl-S) and the buffer is full, lines are
// dropped and counted. A blocked log write must never hold up the
// supervisor's turning SIGTERM into SIGINT, or its reaping. Not package
// log: a log.Logger writes synchronously while holding its lock, so one
// stuck write blocks every goroutine that logs, and it has no way to drop.
type lineLogger struct {
	w       io.Writer
	mu      sync.Mutex // guards closed against a send on a closed channel
	closed  bool
	lines   chan string
	dropped atomic.Int64
	done    chan struct{}
}

func newLineLogger(w io.Writer) *lineLogger {
	l := &lineLogger{w: w, lines: make(chan string, 4096), done: make(chan struct{})}
	go l.write()
	return l
}

func (l *lineLogger) Printf(format string, args ...any) {
	msg := "convex-shim: " + strings.TrimSuffix(fmt.Sprintf(format, args...), "\n") + "\n"
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	select {
	case l.lines <- msg:
	default:
		l.dropped.Add(1)
	}
}

func (l *lineLogger) Print(v any) { l.Printf("%v", v) }

func (l *lineLogger) write() {
	defer close(l.done)
	var batch []byte
	for msg := range l.lines {
		// Whatever else is waiting goes out in the same write: with -v a
		// burst of reaps must not outrun stderr one syscall per line.
		batch = append(batch[:0], msg...)
	more:
		for len(batch) < 64<<10 {
			select {
			case m, ok := <-l.lines:
				if !ok {
					break more
				}
				batch = append(batch, m...)
			default:
				break more
			}
		}
		l.w.Write(batch)
		// Lines are dropped only while the buffer is full, after the ones
		// still in it: say so once those are out.
		if len(l.lines) == 0 {
			if n := l.dropped.Swap(0); n > 0 {
				fmt.Fprintf(l.w, "convex-shim: %d log lines dropped: stderr was not being read\n", n)
			}
		}
	}
}

// Close writes what is buffered, waiting at most timeout: the exit status
// matters more than the last lines to a stderr nobody reads.
func (l *lineLogger) Close(timeout time.Duration) {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.lines)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-time.After(timeout):
	}
}

// isAddrMissing reports an address this machine does not have, such as
// [::1] in a container without IPv6.
func isAddrMissing(err error) bool {
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENETUNREACH)
}

func logf(l shim.Logger, format string, args ...any) {
	if l != nil {
		l.Printf(format, args...)
	}
}

func startFailed(logger shim.Logger, err error) int {
	logger.Printf("%v", err)
	if se := (*shim.StartError)(nil); errors.As(err, &se) {
		return se.Code
	}
	return exitSetup
}

// summary is the one line logged at startup: what is forwarded, where the
// fetch preload sends Node's callbacks, and how a stop is handled. Of the
// environment it names only origins, redacted (they may hold a password).
func summary(c config) string {
	fw := "no forwards"
	if len(c.forwards) > 0 {
		var parts []string
		for _, f := range c.forwards {
			parts = append(parts, fmt.Sprintf("%s -> %s (%s)", f.listen, f.target, f.from))
		}
		fw = "forwarding " + strings.Join(parts, ", ")
	}
	if len(c.nodeRoutes) > 0 {
		fw += "; " + nodeRoutesText(c.nodeRoutes)
	}
	kill := "SIGKILL after " + c.grace.String()
	if c.grace == 0 {
		kill = "no SIGKILL deadline"
	}
	return fmt.Sprintf("%s; stop: SIGTERM/SIGINT/SIGQUIT -> one %s to %s, %s; version %s",
		fw, unix.SignalName(c.stopSignal), c.program[0], kill, versionString())
}

func versionString() string {
	if version != "" {
		return version
	}
	// go install module@version stamps the module version, not -X.
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func usage() string {
	var b strings.Builder
	b.WriteString(`Usage: convex-shim [flags] [--] program [args...]

Runs program (normally ./run_backend.sh of the Convex backend image) as its
child, forwards loopback ports to the backend so Node actions can call back,
turns a stop request into the one SIGINT the backend drains on, reaps every
orphan, and exits with the program's status.

Flags take one or two dashes; a flag beats its CONVEX_SHIM_* environment twin,
and either beats the default:
`)
	for _, s := range settings {
		fmt.Fprintf(&b, "  %s\n%s      %s\n", s.synopsis(""), wrap(s.usage, "      ", 78), s.twinAndDefault())
	}
	b.WriteString(`
Durations are Go durations (8s, 1m30s) or whole seconds.
Signals: SIGINT, INT or a number. Booleans: true/false, 1/0.

Stop policy: the first SIGTERM, SIGINT or SIGQUIT sends one --stop-signal to
the program's pid (not its process group, where the Node server lives); a
second sends it again (Convex's forced exit); a third, or --grace running out,
SIGKILLs the program's process group. HUP, USR1, USR2, WINCH, CONT, ALRM,
VTALRM and PWR are passed to the program's pid unchanged.
Choose --grace below the platform's stop timeout: Docker 10s -> 8s (default),
Kubernetes and Render 30s -> 25s, Fly.io kill_timeout 10s -> 8s.

Exit codes:
  0-255   the program's own exit code
  128+N   the program was killed by signal N (137: SIGKILL after --grace)
  1       a forward could not listen (port in use, or a port below 1024
          without CAP_NET_BIND_SERVICE); the program was not started
  2       usage error: bad flag or environment value, or no program
  126     the program is not executable (or is a directory)
  127     the program was not found
With --check: 0 every route answered, 1 one did not, 2 usage error.
With --install: 0 installed, 1 could not write DIR, 2 usage error.
`)
	return b.String()
}

// wrap breaks text into lines of at most width columns, each indented.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}

// Package shim starts the Convex backend as a child, stops it the way it
// needs to be stopped, reaps every process that reaches it, and reports the
// backend's exit status. It is the init half of convex-shim.
//
// Typical usage:
//
//	s := &shim.Supervisor{Path: "./run_backend.sh", Args: []string{"./run_backend.sh"}}
//	status, err := s.Run() // returns once the backend and its leftovers are gone
//
// Why it exists. The backend drains in-flight requests only on SIGINT (tokio's
// ctrl_c); it has no SIGTERM handler. Docker, Kubernetes and Render stop
// containers with SIGTERM, which a PID-1 backend ignores (so it is SIGKILLed
// after the timeout) and a child backend dies of at once. And as PID 1 the
// backend never reaps the orphans its Node server and `docker exec` leave.
//
// Stop policy:
//
//   - The first stop request (SIGTERM, SIGINT or SIGQUIT, whichever the
//     platform sends) becomes exactly one StopSignal (SIGINT by default) to the
//     backend's pid. Never to its process group: the Node server lives there,
//     and its default SIGINT action would kill Node actions mid-flight.
//   - The second stop request sends StopSignal again; for Convex that is its
//     own "Forcibly shutting down!" path. Any later one SIGKILLs the group.
//   - Grace after the first stop request, the backend's process group is
//     SIGKILLed, so the shim exits with a status of its own choosing before
//     the platform's SIGKILL arrives.
//   - Every other signal in Forwarded goes to the backend's pid unchanged.
//     SIGCHLD, SIGURG (the Go runtime's preemption signal) and SIGPIPE (the
//     shim's own sockets) are never forwarded.
//
// The backend runs in a process group of its own, so under `docker run -it`
// the terminal's Ctrl-C reaches only the shim, which turns it into one SIGINT.
// Without that the backend would get the terminal's SIGINT and the shim's,
// and the second one forces an undrained exit.
//
// Reaping. One goroutine owns every wait: on SIGCHLD it calls
// wait4(-1, WNOHANG) until nothing is left, and notices the backend's pid
// there. When not PID 1 (Fly's init, `docker run --init`, Kubernetes
// shareProcessNamespace) it becomes a child subreaper so orphans still come
// to it. Because nothing else waits, the backend's pid cannot be reaped and
// reused behind our back, so signalling it by pid is safe.
//
// Why not github.com/hashicorp/go-reap: its ReapChildren reports reaped pids
// but not their wait status, so the backend's exit code would be lost when
// the reaper takes it. Its lock leaves two choices: hold it for the child's
// whole life (no orphan is reaped while the backend runs) or release it and
// let the reaper steal the child's status from exec.Cmd.Wait. Owning all
// waits in one loop with golang.org/x/sys/unix has neither problem.
//
// When the backend exits, what is left of its process group and every
// process adopted by the shim gets SIGTERM, and SIGKILL after CleanupGrace.
// Run returns the backend's status: exit code N is N, death by signal S is
// 128+S.
//
// Durations follow one rule, inetaf/tcpproxy's, here and in forward.Proxy:
// zero means the package's default (DefaultGrace, DefaultCleanupGrace,
// forward.DefaultDialRetry), and negative means no limit, so the wait it
// bounds never ends on its own. A negative Grace never SIGKILLs the backend
// on time (a third stop request still does); a negative CleanupGrace waits
// for leftovers to exit on their SIGTERM.
//
// What it deliberately does not do: restart the backend (the platform does
// that, and must see the exit), drop privileges, or touch the terminal.
package shim

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit codes the shim itself produces, as tini and shells do.
const (
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// Defaults for the zero values of Supervisor's durations; see the package
// doc for negative ones.
const (
	// DefaultGrace fits Docker's 10 s stop timeout: after the SIGKILL at 8 s
	// the backend's group is gone at once, and the shim exits before Docker's
	// own SIGKILL would.
	DefaultGrace = 8 * time.Second
	// DefaultCleanupGrace is how long leftovers get between SIGTERM and
	// SIGKILL once the backend has exited.
	DefaultCleanupGrace = 2 * time.Second
)

// StopRequests are the signals that platforms send to stop a container.
var StopRequests = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT}

// Forwarded are passed to the backend's pid as they are. The list is
// explicit: subscribing to every signal would deliver SIGURG, which the Go
// runtime sends itself all the time.
var Forwarded = []os.Signal{
	unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
	unix.SIGCONT, unix.SIGALRM, unix.SIGVTALRM, unix.SIGPWR,
}

// Supervisor runs one program and everything it leaves behind.
type Supervisor struct {
	// Path is the program to run; without a slash it is looked up in PATH.
	Path string
	// Args is argv, Args[0] included. If empty, Path alone is used.
	Args []string
	// Env is the program's environment. If nil, the shim's own as it was
	// given, see Environ.
	Env []string
	// StopSignal is sent to the backend on a stop request. If zero, SIGINT.
	StopSignal unix.Signal
	// Grace is how long after the first stop request the backend's process
	// group is SIGKILLed (zero: DefaultGrace; negative: never).
	Grace time.Duration
	// CleanupGrace is how long leftovers get between SIGTERM and SIGKILL
	// after the backend exits (zero: DefaultCleanupGrace; negative: no
	// SIGKILL).
	CleanupGrace time.Duration
	// ParentDeathSignal is sent to the backend by the kernel if the shim
	// dies without cleaning up (SIGKILL, a crash). It matters only when the
	// shim is not PID 1; as PID 1 its death ends the namespace anyway. If
	// zero, none.
	ParentDeathSignal unix.Signal
	// Exited, if set, is called once the backend has exited, before its
	// leftovers are cleaned up: the place to close forwarders, which free
	// their descriptors for the cleanup's /proc scan.
	Exited func(status int)
	// Log receives what an operator should see; Debug, each signal and reap.
	// Either may be nil. A *log.Logger will do.
	Log, Debug Logger

	sigs chan os.Signal // stop requests and signals to forward; see Subscribe
	chld chan os.Signal // SIGCHLD only
	// subscribed is closed once sigs and chld receive; see Subscribe.
	subscribed chan struct{}
}

// StartError is returned by Run when the program cannot be started.
// Code is ExitNotFound or ExitNotExecutable.
type StartError struct {
	Path string
	Code int
	Err  error
}

func (e *StartError) Error() string {
	hint := ""
	switch {
	case errors.Is(e.Err, errIsDir):
		hint = " (name the program inside it)"
	case e.Code == ExitNotFound:
		hint = " (check the program path and PATH, or the image's working directory)"
	case e.Code == ExitNotExecutable:
		hint = " (make it executable, or name an interpreter before it)"
	}
	return fmt.Sprintf("start %s: %v%s", e.Path, e.Err, hint)
}

func (e *StartError) Unwrap() error { return e.Err }

// Run starts the program and supervises it until it and its leftovers are
// gone. It returns the program's exit status, or a *StartError.
func (s *Supervisor) Run() (int, error) {
	s.Subscribe()
	<-s.subscribed
	resetIgnoredSignals()
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			logf(s.Log, "cannot become a child subreaper, orphans will not be reaped: %v", err)
		}
	}

	// The kernel sends the parent-death signal when the thread that forked
	// the child exits, not the process; keep this goroutine on its thread
	// for the backend's whole life. As PID 1 there is nothing to keep: the
	// shim's death ends the namespace. The lock is not free either: every
	// signal then crosses one more thread on its way to the backend, and the
	// runtime starts a template thread for it.
	deathSig := s.ParentDeathSignal
	if os.Getpid() == 1 {
		deathSig = 0
	}
	if deathSig != 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	// A descriptor held in reserve for the cleanup's /proc scan, in case a
	// flood of connections has used up the rest. Opening it also sets up
	// the runtime's poller now: set up lazily without a free descriptor,
	// it crashes the process.
	spare, _ := os.Open("/dev/null")
	pid, err := s.start(deathSig)
	if err != nil {
		spare.Close()
		return 0, err
	}
	logf(s.Debug, "started %s (pid %d)", s.Path, pid)

	l := &loop{Supervisor: s, pid: pid, spare: spare, policy: newPolicy(s, pid)}
	status := l.run()
	l.spare.Close() // nil-safe: an *os.File method
	return status, nil
}

// Subscribe starts taking every signal Run handles; Run calls it if the
// program has not. A program calls it first thing: before the subscription,
// a stop request meets the Go runtime's default action, which as PID 1 exits
// 2 and otherwise kills the shim. Signals taken before the backend starts
// are acted on once it runs.
//
// Subscribe returns at once and subscribes in the background, stop requests
// first; Run waits for it before starting the program. Each signal is a
// round trip to the runtime's signal-mask thread (os/signal has no batch),
// so the program's setup (binding the forwards) runs meanwhile instead of
// after them, and the backend starts that much sooner.
//
// The subscription outlives Run on purpose. Between Run's return and the
// program's exit a stop request must still be taken, not left to the
// default action, or the backend's exit status is lost.
//
// SIGPIPE is taken only so that a closed stderr cannot kill the shim; it is
// dropped. SIGCHLD has a channel of its own: one pending SIGCHLD is enough,
// since each one reaps until nothing is left, but a storm of other signals
// must never crowd it out (catatonit's hang, its issue #4, was a lost
// SIGCHLD).
func (s *Supervisor) Subscribe() {
	if s.sigs != nil {
		return
	}
	s.sigs = make(chan os.Signal, 64)
	s.chld = make(chan os.Signal, 1)
	s.subscribed = make(chan struct{})
	go func() {
		signal.Notify(s.sigs, slices.Concat(StopRequests, Forwarded, []os.Signal{unix.SIGPIPE})...)
		signal.Notify(s.chld, unix.SIGCHLD)
		close(s.subscribed)
	}()
}

func (s *Supervisor) start(deathSig unix.Signal) (int, error) {
	args := s.Args
	if len(args) == 0 {
		args = []string{s.Path}
	}
	env := s.Env
	if env == nil {
		env = Environ()
	}
	path, err := LookPath(s.Path, env)
	if err != nil {
		return 0, err
	}
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			// A group of its own keeps the backend out of the terminal's
			// foreground group and lets cleanup kill the Node server with it.
			Setpgid:   true,
			Pdeathsig: syscall.Signal(deathSig),
		},
	})
	if err != nil {
		return 0, startError(s.Path, err)
	}
	return pid, nil
}

func sigName(s unix.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}

// orDefault is d, or def if d is zero: the durations' rule (package doc).
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// after is a channel that receives once d has passed, or never if d is
// negative (no limit).
func after(d time.Duration) <-chan time.Time {
	if d < 0 {
		return nil
	}
	return time.After(d)
}

// Logger is what Supervisor logs to; *log.Logger is one.
type Logger interface {
	Printf(format string, args ...any)
}

func logf(l Logger, format string, args ...any) {
	if l != nil {
		l.Printf(format, args...)
	}
}

package shim

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// policy is the stop policy of the package doc as a state machine: the loop
// hands it each event (a signal taken, the grace timer firing, the backend's
// exit) and carries out the actions it returns. It makes no system call and
// reads no clock, so every decision is tested without processes or sleeps.
type policy struct {
	pid        int           // the backend's pid; its process group has the same id
	stopSignal unix.Signal   // what a stop request becomes
	grace      time.Duration // negative: no grace timer
	stops      int           // stop requests so far
	timing     bool          // the grace timer is running
	exited     bool          // the backend has exited, with status
	status     int
}

func newPolicy(s *Supervisor, pid int) *policy {
	stop := s.StopSignal
	if stop == 0 {
		stop = unix.SIGINT
	}
	return &policy{pid: pid, stopSignal: stop, grace: orDefault(s.Grace, DefaultGrace)}
}

// action is one thing the loop does for the policy.
type action struct {
	kind actionKind
	msg  string        // logInfo, logDebug
	pid  int           // kill: negative is a process group
	sig  unix.Signal   // kill
	d    time.Duration // startGrace
}

type actionKind int

const (
	logInfo    actionKind = iota // msg to Supervisor.Log
	logDebug                     // msg to Supervisor.Debug
	kill                         // sig to pid
	startGrace                   // start the grace timer, to fire after d
)

func (a action) String() string {
	switch a.kind {
	case logInfo:
		return "log " + a.msg
	case logDebug:
		return "debug " + a.msg
	case kill:
		return fmt.Sprintf("kill %d %s", a.pid, sigName(a.sig))
	case startGrace:
		return "start grace " + a.d.String()
	}
	return fmt.Sprintf("action %d", int(a.kind))
}

func info(format string, args ...any) action {
	return action{kind: logInfo, msg: fmt.Sprintf(format, args...)}
}

func debug(format string, args ...any) action {
	return action{kind: logDebug, msg: fmt.Sprintf(format, args...)}
}

// signal decides what a signal the shim took does.
func (p *policy) signal(sig unix.Signal) []action {
	if p.exited {
		return nil // the backend is gone; nothing left to stop or tell
	}
	switch sig {
	case unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE:
		// The reaper's wake-up, the Go runtime's preemption, the shim's own
		// sockets: none of them is meant for the backend.
		return nil
	case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
		return p.stopRequest(sig)
	}
	return []action{
		debug("forwarding %s to pid %d", sigName(sig), p.pid),
		{kind: kill, pid: p.pid, sig: sig},
	}
}

func (p *policy) stopRequest(sig unix.Signal) []action {
	p.stops++
	var acts []action
	if p.stops <= 2 {
		// To the pid only: the Node server in its group would die of SIGINT
		// mid-action. The second is Convex's own forced shutdown.
		acts = []action{
			info("received %s (stop request %d); sending %s to the backend (pid %d)", sigName(sig), p.stops, sigName(p.stopSignal), p.pid),
			{kind: kill, pid: p.pid, sig: p.stopSignal},
		}
	} else {
		acts = []action{
			info("received %s (stop request %d); sending SIGKILL to the backend's process group", sigName(sig), p.stops),
			{kind: kill, pid: -p.pid, sig: unix.SIGKILL},
		}
	}
	if !p.timing && p.grace >= 0 {
		p.timing = true
		acts = append(acts, action{kind: startGrace, d: p.grace})
	}
	return acts
}

// graceExpired is the grace timer firing.
func (p *policy) graceExpired() []action {
	p.timing = false
	if p.exited {
		return nil
	}
	return []action{
		info("backend still running %v after the stop request; sending SIGKILL to its process group", p.grace),
		{kind: kill, pid: -p.pid, sig: unix.SIGKILL},
	}
}

// backendExited is the backend's wait status, reaped.
func (p *policy) backendExited(ws unix.WaitStatus) []action {
	p.exited, p.status = true, ExitStatus(ws)
	return []action{debug("backend (pid %d) exited: %s, status %d", p.pid, describe(ws), p.status)}
}

// ExitStatus maps a wait status to a shell-style exit code.
func ExitStatus(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + sigName(ws.Signal())
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

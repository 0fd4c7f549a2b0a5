package shim

import (
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

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

// loop is the single goroutine that owns signals, waits and timers.
type loop struct {
	*Supervisor
	pid   int
	spare *os.File // a descriptor to give up when /proc cannot be read
	stops int      // stop requests so far

	exited bool
	status int
}

func (l *loop) run() int {
	var grace <-chan time.Time
	for !l.exited {
		select {
		case <-l.chld:
			l.reap()
		case sig := <-l.sigs:
			if l.handle(sig.(unix.Signal)) && grace == nil {
				grace = after(l.graceDur())
			}
		case <-grace:
			logf(l.Log, "backend still running %v after the stop request; sending SIGKILL to its process group", l.graceDur())
			l.kill(-l.pid, unix.SIGKILL)
			grace = nil
		}
	}
	if l.Exited != nil {
		l.Exited(l.status)
	}
	l.cleanup()
	return l.status
}

func (l *loop) graceDur() time.Duration { return orDefault(l.Grace, DefaultGrace) }

// handle acts on one signal and reports whether it was a stop request.
func (l *loop) handle(sig unix.Signal) bool {
	switch sig {
	case unix.SIGPIPE:
		return false
	case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
		l.stops++
		switch l.stops {
		case 1, 2:
			logf(l.Log, "received %s (stop request %d); sending %s to the backend (pid %d)", sigName(sig), l.stops, sigName(l.stopSignal()), l.pid)
			l.kill(l.pid, l.stopSignal())
		default:
			logf(l.Log, "received %s (stop request %d); sending SIGKILL to the backend's process group", sigName(sig), l.stops)
			l.kill(-l.pid, unix.SIGKILL)
		}
		return true
	default:
		logf(l.Debug, "forwarding %s to pid %d", sigName(sig), l.pid)
		l.kill(l.pid, sig)
		return false
	}
}

func (l *loop) stopSignal() unix.Signal {
	if l.StopSignal == 0 {
		return unix.SIGINT
	}
	return l.StopSignal
}

// kill sends sig to pid (a negative pid is a process group). ESRCH only
// means it is already gone.
func (l *loop) kill(pid int, sig unix.Signal) {
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		logf(l.Log, "kill %d %s: %v", pid, sigName(sig), err)
	}
}

// reap collects every child that has exited. It reports whether any child
// is left.
func (l *loop) reap() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			return false
		case err != nil:
			logf(l.Log, "wait4: %v", err)
			return true
		case pid <= 0:
			return true
		case pid == l.pid:
			l.exited, l.status = true, ExitStatus(ws)
			logf(l.Debug, "backend (pid %d) exited: %s, status %d", pid, describe(ws), l.status)
		default:
			logf(l.Debug, "reaped pid %d: %s", pid, describe(ws))
		}
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + sigName(ws.Signal())
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

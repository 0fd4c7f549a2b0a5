package shim

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// loop is the single goroutine that owns signals, waits and timers. It
// carries out what the policy decides.
type loop struct {
	*Supervisor
	pid    int
	spare  *os.File // a descriptor to give up when /proc cannot be read
	policy *policy
	grace  <-chan time.Time // the policy's grace timer, while it runs
}

func (l *loop) run() int {
	for !l.policy.exited {
		select {
		case <-l.chld:
			l.reap()
		case sig := <-l.sigs:
			l.do(l.policy.signal(sig.(unix.Signal)))
		case <-l.grace:
			l.grace = nil
			l.do(l.policy.graceExpired())
		}
	}
	if l.Exited != nil {
		l.Exited(l.policy.status)
	}
	l.cleanup()
	return l.policy.status
}

// do carries out the policy's actions.
func (l *loop) do(acts []action) {
	for _, a := range acts {
		switch a.kind {
		case logInfo:
			logf(l.Log, "%s", a.msg)
		case logDebug:
			logf(l.Debug, "%s", a.msg)
		case kill:
			l.kill(a.pid, a.sig)
		case startGrace:
			l.grace = time.After(a.d)
		}
	}
}

// kill sends sig to pid (a negative pid is a process group). ESRCH only
// means it is already gone.
func (l *loop) kill(pid int, sig unix.Signal) {
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		logf(l.Log, "kill %d %s: %v", pid, sigName(sig), err)
	}
}

// reap collects every child that has exited, the backend's status going to
// the policy. It reports whether any child is left.
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
			l.do(l.policy.backendExited(ws))
		default:
			logf(l.Debug, "reaped pid %d: %s", pid, describe(ws))
		}
	}
}

package shim

import (
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An event the loop hands the policy: a signal taken, the grace timer
// firing, or the backend's wait status.
type event struct {
	sig    unix.Signal
	expire bool
	exit   *unix.WaitStatus
}

func sig(s unix.Signal) event { return event{sig: s} }

var expire = event{expire: true}

func exitCode(n int) event {
	ws := unix.WaitStatus(n << 8)
	return event{exit: &ws}
}

func killedBy(s unix.Signal) event {
	ws := unix.WaitStatus(s)
	return event{exit: &ws}
}

func (p *policy) feed(e event) []action {
	switch {
	case e.expire:
		return p.graceExpired()
	case e.exit != nil:
		return p.backendExited(*e.exit)
	}
	return p.signal(e.sig)
}

// effects drops the log lines: what the policy does to processes and timers.
func effects(acts []action) []string {
	var out []string
	for _, a := range acts {
		if a.kind != logInfo && a.kind != logDebug {
			out = append(out, a.String())
		}
	}
	return out
}

const backend = 4242 // the backend's pid, and its process group's id

// The stop policy of the package doc, decision by decision: each case feeds
// events in order and lists what each one must do (kill PID SIGNAL, a
// negative PID being the group; start grace D), then the status if the
// backend has exited. No process, signal or clock is involved.
func TestPolicy(t *testing.T) {
	const none = -1 // the backend has not exited
	for _, tc := range []struct {
		name   string
		sup    Supervisor
		events []event
		want   [][]string
		status int
	}{
		{"first SIGTERM is one SIGINT to the pid, and starts the grace", Supervisor{},
			[]event{sig(unix.SIGTERM)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}}, none},
		{"first SIGINT likewise", Supervisor{},
			[]event{sig(unix.SIGINT)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}}, none},
		{"first SIGQUIT likewise", Supervisor{},
			[]event{sig(unix.SIGQUIT)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}}, none},
		{"StopSignal chosen", Supervisor{StopSignal: unix.SIGTERM, Grace: 300 * time.Millisecond},
			[]event{sig(unix.SIGTERM)},
			[][]string{{"kill 4242 SIGTERM", "start grace 300ms"}}, none},
		{"second stop sends StopSignal again, third and later SIGKILL the group", Supervisor{},
			[]event{sig(unix.SIGTERM), sig(unix.SIGINT), sig(unix.SIGTERM), sig(unix.SIGQUIT), killedBy(unix.SIGKILL)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}, {"kill 4242 SIGINT"}, {"kill -4242 SIGKILL"}, {"kill -4242 SIGKILL"}, nil}, 137},
		{"grace expiry SIGKILLs the group", Supervisor{},
			[]event{sig(unix.SIGTERM), expire, killedBy(unix.SIGKILL)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}, {"kill -4242 SIGKILL"}, nil}, 137},
		{"a stop after the grace expired starts it again", Supervisor{},
			[]event{sig(unix.SIGTERM), expire, sig(unix.SIGTERM)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}, {"kill -4242 SIGKILL"}, {"kill 4242 SIGINT", "start grace 8s"}}, none},
		{"negative Grace: no timer, the drain may take as long as it takes", Supervisor{Grace: -1},
			[]event{sig(unix.SIGTERM), sig(unix.SIGTERM), exitCode(0)},
			[][]string{{"kill 4242 SIGINT"}, {"kill 4242 SIGINT"}, nil}, 0},
		{"other signals go to the pid unchanged and start no grace", Supervisor{},
			[]event{sig(unix.SIGHUP), sig(unix.SIGUSR1), sig(unix.SIGUSR2), sig(unix.SIGWINCH), sig(unix.SIGCONT), sig(unix.SIGALRM), sig(unix.SIGVTALRM), sig(unix.SIGPWR)},
			[][]string{{"kill 4242 SIGHUP"}, {"kill 4242 SIGUSR1"}, {"kill 4242 SIGUSR2"}, {"kill 4242 SIGWINCH"}, {"kill 4242 SIGCONT"}, {"kill 4242 SIGALRM"}, {"kill 4242 SIGVTALRM"}, {"kill 4242 SIGPWR"}}, none},
		{"SIGCHLD, SIGURG and SIGPIPE are never forwarded, nor count as stops", Supervisor{},
			[]event{sig(unix.SIGCHLD), sig(unix.SIGURG), sig(unix.SIGPIPE), sig(unix.SIGTERM)},
			[][]string{nil, nil, nil, {"kill 4242 SIGINT", "start grace 8s"}}, none},
		{"the backend exits before any stop request", Supervisor{},
			[]event{exitCode(3)},
			[][]string{nil}, 3},
		{"after the exit, nothing is sent to the pid, which may be reused", Supervisor{},
			[]event{sig(unix.SIGTERM), exitCode(0), sig(unix.SIGTERM), sig(unix.SIGHUP), expire},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}, nil, nil, nil, nil}, 0},
		{"the forced exit of the second SIGINT", Supervisor{},
			[]event{sig(unix.SIGTERM), sig(unix.SIGTERM), exitCode(1)},
			[][]string{{"kill 4242 SIGINT", "start grace 8s"}, {"kill 4242 SIGINT"}, nil}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPolicy(&tc.sup, backend)
			for i, e := range tc.events {
				if got := effects(p.feed(e)); !slices.Equal(got, tc.want[i]) {
					t.Errorf("event %d %+v: got %q, want %q", i+1, e, got, tc.want[i])
				}
			}
			if tc.status == none {
				if p.exited {
					t.Errorf("exited with %d, want still running", p.status)
				}
			} else if !p.exited || p.status != tc.status {
				t.Errorf("exited %v, status %d; want status %d", p.exited, p.status, tc.status)
			}
		})
	}
}

// Exit code N is N and death by signal S is 128+S, through the policy as
// through ExitStatus.
func TestPolicyExitStatus(t *testing.T) {
	for _, tc := range []struct {
		e    event
		want int
	}{
		{exitCode(0), 0}, {exitCode(1), 1}, {exitCode(42), 42}, {exitCode(255), 255},
		{killedBy(unix.SIGINT), 130}, {killedBy(unix.SIGKILL), 137}, {killedBy(unix.SIGSEGV), 139},
		{killedBy(unix.SIGTERM), 143}, {killedBy(unix.SIGABRT), 134},
	} {
		p := newPolicy(&Supervisor{}, backend)
		p.feed(tc.e)
		if !p.exited || p.status != tc.want {
			t.Errorf("wait status %#x: exited %v, status %d, want %d", uint32(*tc.e.exit), p.exited, p.status, tc.want)
		}
	}
}

// What an operator reads: one line per stop request and per grace expiry
// (Log), and one per forwarded signal and the exit (Debug).
func TestPolicyLogLines(t *testing.T) {
	p := newPolicy(&Supervisor{Grace: 300 * time.Millisecond}, backend)
	var got []string
	for _, e := range []event{sig(unix.SIGHUP), sig(unix.SIGTERM), sig(unix.SIGINT), sig(unix.SIGQUIT), expire, killedBy(unix.SIGKILL)} {
		for _, a := range p.feed(e) {
			if a.kind == logInfo || a.kind == logDebug {
				got = append(got, a.String())
			}
		}
	}
	want := []string{
		"debug forwarding SIGHUP to pid 4242",
		"log received SIGTERM (stop request 1); sending SIGINT to the backend (pid 4242)",
		"log received SIGINT (stop request 2); sending SIGINT to the backend (pid 4242)",
		"log received SIGQUIT (stop request 3); sending SIGKILL to the backend's process group",
		"log backend still running 300ms after the stop request; sending SIGKILL to its process group",
		"debug backend (pid 4242) exited: killed by SIGKILL, status 137",
	}
	if !slices.Equal(got, want) {
		t.Errorf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The subscription and the policy agree: every signal the shim takes is a
// stop request, forwarded, or SIGPIPE (dropped); none of the three that must
// never reach the backend is in Forwarded.
func TestForwardedExcludesOwnSignals(t *testing.T) {
	for _, s := range Forwarded {
		switch s {
		case unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
			t.Errorf("Forwarded lists %v", s)
		}
		p := newPolicy(&Supervisor{}, backend)
		if got := effects(p.signal(s.(unix.Signal))); len(got) != 1 || got[0] != "kill 4242 "+sigName(s.(unix.Signal)) {
			t.Errorf("%v: got %q, want it forwarded unchanged", s, got)
		}
	}
}

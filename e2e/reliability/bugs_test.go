//go:build reliability_bugs

package reliability

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bug reproducers for the shim's owner: they fail until the bug is fixed.
// Run them with: go test -tags reliability_bugs -run Bug ./e2e/reliability/
// With the tag, tests that tolerate a known bug (see knownBug) fail on it.

const strictKnownBugs = true

// BUG late-stop-signal: a stop request that arrives after shim.Run has
// returned (its deferred signal.Stop undid the subscription) and before
// main's os.Exit meets the Go runtime's default action: as PID 1 the
// kernel ignores the raised signal and the runtime exits 2, so the
// backend's status (here 7) is lost. Not PID 1 the shim dies of the signal
// (143). SIGINT and SIGHUP do the same; SIGQUIT dumps goroutines and exits 2.
func TestBugLateStopSignalLosesExitStatus(t *testing.T) {
	for _, pid1 := range []bool{true, false} {
		bad := 0
		const runs = 200
		for range runs {
			// The backend ignores SIGINT and exits 7 on its own, while a
			// SIGTERM storm runs. 3 stop requests would SIGKILL it (137),
			// so --stop-signal is a no-op-ish SIGWINCH and --grace 0.
			r := start(t, opts{pid1: pid1, noNet: true, direct: true,
				args:    []string{"--forward", "off", "--grace", "0", "--stop-signal", "SIGWINCH"},
				program: []string{"/bin/busybox", "sh", "-c", `trap "" WINCH; echo ready; sleep 0.05; exit 7`}})
			r.line("ready")
			for r.signal(syscall.SIGTERM) == nil {
			}
			code := r.wait(20 * time.Second)
			if code != 7 && code != 137 {
				bad++
				if bad == 1 {
					t.Logf("pid1=%v: exit %d; stderr:\n%s", pid1, code, r.stderr.String())
				}
			}
		}
		if bad > 0 {
			t.Errorf("BUG late-stop-signal (pid1=%v): %d of %d runs lost the backend's exit status 7", pid1, bad, runs)
		}
	}
}

// BUG stalled-log: the supervisor loop writes its log line for a stop
// request before it signals the backend, and log writes block. With stderr
// not being read (Docker's blocking log mode behind a slow driver, a
// terminal paused with Ctrl-S), a SIGTERM is never turned into the SIGINT,
// --grace never fires (the same loop owns the timer) and nothing is reaped:
// the shim hangs until the platform's SIGKILL. Here the backend fills the
// shared stderr pipe; the policy says SIGINT at once and SIGKILL after 1s.
func TestBugStalledStderrBlocksStop(t *testing.T) {
	r := start(t, opts{pid1: true, noNet: true, holdStderr: true, args: []string{"--forward", "off", "--grace", "1s"},
		env: []string{"REL_FILL_STDERR=1048576", "REL_ON_INT=ignore"}})
	r.line("ready ")
	if !eventually(10*time.Second, 5*time.Millisecond, r.stderrFull) {
		t.Fatal("the backend did not fill the stderr pipe")
	}
	r.signal(syscall.SIGTERM)
	_, gotInt := r.stdout.waitFor(3*time.Second, func(l string) bool { return l == "backend got SIGINT" })
	exited := eventually(4*time.Second, 10*time.Millisecond, r.exited)
	r.release()
	if !gotInt || !exited {
		t.Errorf("BUG stalled-log: with stderr unread, SIGTERM gave the backend a SIGINT within 3s: %v; the shim exited by grace (1s) within 4s more: %v", gotInt, exited)
	}
	if !exited {
		code := r.wait(30 * time.Second)
		t.Logf("once stderr was read again the shim went on and exited %d", code)
	}
}

// BUG cleanup-needs-fds: not PID 1, the shim finds the processes it adopted
// by reading /proc, which needs file descriptors. If it is out of them when
// the backend exits (here its RLIMIT_NOFILE is lowered to what it uses; in
// production, a connection flood with callbacks held for --dial-retry), an
// adopted setsid daemon is never signalled, and after the SIGKILL round the
// cleanup loop has no deadline left: the shim waits for it forever instead
// of exiting with the backend's status (3).
// (With --forward off the runtime's poller is not yet set up, and the
// first /proc read crashes the shim instead: "runtime: eventfd failed",
// exit 2.)
func TestBugCleanupNeedsDescriptors(t *testing.T) {
	// :81 forwards to a port nothing listens on: its clients are held for
	// --dial-retry, as callbacks are while a backend is down.
	r := start(t, opts{args: []string{"--cleanup-grace", "300ms", "--forward", "127.0.0.1:80=127.0.0.1:3210,127.0.0.1:81=127.0.0.1:9"},
		env: []string{"REL_KIDS=daemon", "REL_CRASH=exit:3"}})
	r.line("ready ")
	var held []net.Conn
	defer func() { closeAll(held) }()
	nsRun(r.pid, 1, func(int) error {
		for range 5 {
			if c, err := dialFrom("", "127.0.0.1:81", 5*time.Second); err == nil {
				held = append(held, c)
			}
		}
		return nil
	})
	if !eventually(5*time.Second, 5*time.Millisecond, func() bool { k, _ := fdKinds(r.pid); return k["socket"] == 2+5 }) {
		t.Fatalf("the shim did not accept the 5 held clients")
	}
	var daemon int
	fmt.Sscanf(r.line("kid daemon pid="), "kid daemon pid=%d", &daemon)
	if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return ppidOf(daemon) == r.pid }) {
		t.Fatalf("daemon not adopted")
	}
	var old unix.Rlimit
	unix.Prlimit(r.pid, unix.RLIMIT_NOFILE, nil, &old)
	// Below what it uses: no new descriptor, whatever closes meanwhile.
	low := unix.Rlimit{Cur: uint64(fdCount(r.pid) - 4), Max: old.Max}
	if err := unix.Prlimit(r.pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	r.signal(syscall.SIGHUP) // the backend exits 3
	r.line("crashing exit:3")
	exited := eventually(5*time.Second, 10*time.Millisecond, r.exited)
	if !exited {
		t.Errorf("BUG cleanup-needs-fds: the backend exited 3, the shim (out of descriptors) has not exited 5s later; its adopted daemon %d is %s", daemon, procState(daemon))
		unix.Prlimit(r.pid, unix.RLIMIT_NOFILE, &old, nil)
		unix.Kill(daemon, unix.SIGKILL)
		t.Logf("after the daemon was killed by hand the shim exited %d", r.wait(30*time.Second))
	} else if r.status != 3 {
		t.Errorf("exit %d, want 3; stderr starts:\n%s", r.status, head(r.stderr.String(), 30))
	}
}

func head(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

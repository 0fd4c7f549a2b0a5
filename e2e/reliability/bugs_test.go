//go:build reliability_bugs

package reliability

import (
	"syscall"
	"testing"
	"time"
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

package shim

import (
	"github.com/convex-shim/convex-shim/internal/sigdisp"
	"golang.org/x/sys/unix"
)

// resetIgnoredSignals sets every signal the shim inherited as ignored back
// to its default action, so the backend starts with default dispositions.
// Go resets the signals it handles in a forked child, but leaves alone the
// ones it never touches (32 and 33, glibc's internal signals) and an ignored
// one stays ignored across execve: a parent that ignored them would pass
// that on to the backend through us.
func resetIgnoredSignals() {
	for sig := unix.Signal(1); sig <= 64; sig++ {
		if sig == unix.SIGKILL || sig == unix.SIGSTOP {
			continue
		}
		if d, err := sigdisp.Get(sig); err == nil && d == sigdisp.Ignore {
			sigdisp.Set(sig, sigdisp.Default)
		}
	}
}

package reliability

// Regression tests for shim bugs these tests found (each failed on the
// build before the fix; RELIABILITY_SHIM=path runs the suite against
// another build to see that).

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// late-stop-signal (fixed in 4688a78): a SIGTERM, SIGINT, SIGHUP or SIGQUIT
// arriving after shim.Run had returned (its deferred signal.Stop undid the
// subscription) and before main's os.Exit met the Go runtime's default
// action: as PID 1 the runtime exited 2, otherwise the shim died of the
// signal, and the backend's status was lost. A storm of stop requests (the
// 3rd SIGKILLs the backend: 137, unless it exited 7 first) and a stream of
// forwarded SIGHUPs (no escalation: 7) run into the shim's exit. The window
// is widest when the shim is preempted in it, so both CPUs are kept busy, as
// on a loaded host; the build before the fix lost the status in about 1 run
// in 10 of each kind.
func TestLateSignalsKeepExitStatus(t *testing.T) {
	runs := scale(40, 200)
	// Keep every CPU busy, so the shim is preempted in the window between
	// Run's return and its exit.
	var stop atomic.Bool
	defer stop.Store(true)
	for range 2 * runtime.NumCPU() {
		go func() {
			for spins := 0; !stop.Load(); spins++ {
			}
		}()
	}
	for _, v := range []struct {
		name string
		sig  syscall.Signal
		args []string
		trap string
		ok   map[int]bool
	}{
		{"SIGTERM storm", syscall.SIGTERM, []string{"--grace", "0", "--stop-signal", "SIGWINCH"}, "WINCH", map[int]bool{7: true, 137: true}},
		{"SIGHUP stream", syscall.SIGHUP, nil, "HUP", map[int]bool{7: true}},
	} {
		for _, pid1 := range []bool{true, false} {
			bad := 0
			codes := map[int]int{}
			for range runs {
				r := start(t, opts{PID1: pid1, NoNet: true, Direct: true,
					Args:    append([]string{"--forward", "off"}, v.args...),
					Program: []string{"/bin/busybox", "sh", "-c", `trap "" ` + v.trap + `; echo ready; sleep 0.05; exit 7`}})
				r.Line("ready")
				// Until the shim is gone (bounded: 10 s, a million signals).
				for end, i := time.Now().Add(10*time.Second), 0; i < 1e6 && time.Now().Before(end) && r.Signal(v.sig) == nil; i++ {
				}
				code := r.Wait(20 * time.Second)
				codes[code]++
				if !v.ok[code] {
					bad++
					if bad == 1 {
						t.Logf("%s, pid1=%v: exit %d; stderr:\n%s", v.name, pid1, code, head(r.Stderr.String(), 8))
					}
				}
			}
			t.Logf("%s until the shim is gone, pid1=%v: %d runs, exit codes %v (negative: killed by that signal)", v.name, pid1, runs, histogram(codes))
			if bad > 0 {
				t.Errorf("%s, pid1=%v: %d of %d runs lost the backend's status", v.name, pid1, bad, runs)
			}
		}
	}
}

// stalled-log (fixed in 4688a78): the supervisor wrote its log line for a
// stop request before signalling the backend, and log writes blocked; with
// stderr not being read (a blocking log driver behind a slow sink, a
// terminal paused with Ctrl-S) a SIGTERM never became the SIGINT and
// --grace never fired. Here the backend fills the shared stderr pipe and
// nobody reads it: the backend must still get its SIGINT at once, the group
// its SIGKILL after --grace 1s, and the shim must exit (its log flush gives
// up after 1s).
func TestStalledStderrDoesNotBlockStop(t *testing.T) {
	r := start(t, opts{PID1: true, NoNet: true, HoldStderr: true, Args: []string{"--forward", "off", "--grace", "1s"},
		Env: []string{"REL_FILL_STDERR=1048576", "REL_ON_INT=ignore"}})
	r.Line("ready ")
	if !eventually(10*time.Second, 5*time.Millisecond, r.StderrFull) {
		t.Fatal("the backend did not fill the stderr pipe")
	}
	t0 := time.Now()
	r.Signal(syscall.SIGTERM)
	_, gotInt := r.Stdout.WaitFor(3*time.Second, func(l string) bool { return l == "backend got SIGINT" })
	exited := eventually(6*time.Second, 10*time.Millisecond, r.Exited)
	took := time.Since(t0)
	r.Release()
	code := r.Wait(30 * time.Second)
	t.Logf("stderr unread: SIGINT delivered %v, shim exited %v (%d) %v after the SIGTERM", gotInt, exited, code, took.Round(time.Millisecond))
	if !gotInt {
		t.Errorf("with stderr unread, the SIGTERM did not become the backend's SIGINT within 3s")
	}
	if !exited || code != 137 {
		t.Errorf("with stderr unread, the shim exited: %v (status %d), want 137 after --grace 1s", exited, code)
	}
}

// cleanup-needs-fds (fixed in 4688a78): not PID 1, the shim finds what it
// adopted by reading /proc, which takes a descriptor. Out of them when the
// backend exited (here RLIMIT_NOFILE is lowered to what it uses; in
// production, a flood of callbacks held for --dial-retry), it never
// signalled an adopted setsid daemon and, after the SIGKILL round, waited
// for it forever; with --forward off the first /proc read even crashed it
// ("runtime: eventfd failed", exit 2). Now: exit 3 with the daemon gone.
func TestCleanupOutOfDescriptors(t *testing.T) {
	for _, fwd := range []bool{true, false} {
		t.Run(fmt.Sprintf("forwards=%v", fwd), func(t *testing.T) {
			args := []string{"--cleanup-grace", "300ms", "--forward", "off"}
			if fwd {
				// :81 forwards to a port nothing listens on: its clients are
				// held for --dial-retry, as callbacks are while a backend is down.
				args = []string{"--cleanup-grace", "300ms", "--forward", "127.0.0.1:80=127.0.0.1:3210,127.0.0.1:81=127.0.0.1:9"}
			}
			r := start(t, opts{NoNet: !fwd, Args: args, Env: []string{"REL_KIDS=daemon", "REL_CRASH=exit:3"}})
			r.Line("ready ")
			var held []net.Conn
			defer func() { closeAll(held) }()
			if fwd {
				nsRun(r.PID, 1, func(int) error {
					for range 5 {
						if c, err := dialFrom("", "127.0.0.1:81", 5*time.Second); err == nil {
							held = append(held, c)
						}
					}
					return nil
				})
				if !eventually(5*time.Second, 5*time.Millisecond, func() bool { k, _ := fdKinds(r.PID); return k["socket"] == 2+5 }) {
					t.Fatalf("the shim did not accept the 5 held clients")
				}
			}
			var daemon int
			fmt.Sscanf(r.Line("kid daemon pid="), "kid daemon pid=%d", &daemon)
			st := startTime(daemon)
			if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return ppidOf(daemon) == r.PID }) {
				t.Fatalf("daemon not adopted")
			}
			var old unix.Rlimit
			unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, nil, &old)
			// No descriptor left: the limit is the lowest free number, so the
			// spare given up is the only one (a limit at the count would leave
			// any hole below free too, and hide a scan that needs two). With
			// forwards, lower still, so that the held clients' dial retries (a
			// socket each, now and then) cannot free one by chance; closing the
			// forwarders frees plenty.
			used := lowestFreeFd(r.PID)
			if fwd {
				used -= 4
			}
			low := unix.Rlimit{Cur: uint64(used), Max: old.Max}
			if err := unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, &low, nil); err != nil {
				t.Fatal(err)
			}
			r.Signal(syscall.SIGHUP) // the backend exits 3
			r.Line("crashing exit:3")
			t0 := time.Now()
			if !eventually(5*time.Second, 10*time.Millisecond, r.Exited) {
				t.Errorf("the backend exited 3; the shim, out of descriptors, has not exited 5s later; its adopted daemon %d is %s", daemon, procState(daemon))
				unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, &old, nil)
				unix.Kill(daemon, unix.SIGKILL)
				return
			}
			code := r.Wait(30 * time.Second)
			t.Logf("out of descriptors: exit %d %v after the backend ended; daemon alive: %v", code, r.ExitedAt.Sub(t0).Round(time.Millisecond), alive(daemon, st))
			if code != 3 {
				t.Errorf("exit %d, want 3; stderr starts:\n%s", code, head(r.Stderr.String(), 30))
			}
			if alive(daemon, st) {
				t.Errorf("the adopted daemon %d outlived the shim", daemon)
			}
		})
	}
}

func head(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

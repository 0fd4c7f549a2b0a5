// Package pid1 tests the real convex-shim binary end to end, most of it as
// PID 1 of a fresh PID and network namespace: the only place where "a Go
// PID 1 that does not handle SIGTERM exits 2" and orphan reaping can be
// seen. It is the stop policy, reaping, exit status, start errors, the
// default forward and --check as a user sees them; shim's own tests cover
// the policy's decisions one by one. The harness is internal/pid1test: it
// needs root (or CAP_SYS_ADMIN), and where the kernel refuses the tests fail
// with its reason rather than skip.
package pid1

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"github.com/convex-shim/convex-shim/internal/proc"
	"golang.org/x/sys/unix"
)

// Exit codes of cmd/convex-shim that these tests see.
const (
	exitSetup       = 1 // a forward could not listen; nothing was started
	exitCheckFailed = 1 // --check found a forward or the backend down
)

func TestMain(m *testing.M) {
	pid1test.Dispatch(helperMain)
	os.Exit(pid1test.Run(m, ""))
}

type opts = pid1test.Options

// start starts a shim. Not as PID 1, it stays in the host's network
// namespace, where the tests that need one (a port already taken) are.
func start(t *testing.T, o opts) *pid1test.Instance {
	t.Helper()
	if !o.PID1 {
		o.NoNet = true
	}
	return pid1test.Start(t, o)
}

// wait waits for the shim to exit and returns its exit code.
func wait(in *pid1test.Instance) int {
	in.T.Helper()
	return in.Wait(30 * time.Second)
}

// send sends sig to the shim.
func send(in *pid1test.Instance, sig syscall.Signal) {
	in.T.Helper()
	if err := in.Signal(sig); err != nil {
		in.T.Fatalf("signal shim: %v", err)
	}
}

func TestPID1ExitCodesPassThrough(t *testing.T) {
	for code := range 256 {
		in := start(t, opts{PID1: true, Args: []string{"--forward", "off"}, Program: []string{"/bin/sh", "-c", "exit " + strconv.Itoa(code)}})
		if got := wait(in); got != code {
			t.Fatalf("program exit %d: shim exit %d", code, got)
		}
	}
}

func TestPID1DeathBySignal(t *testing.T) {
	for _, tc := range []struct {
		sig  string
		want int
	}{{"SEGV", 139}, {"ABRT", 134}, {"KILL", 137}, {"TERM", 143}, {"INT", 130}} {
		in := start(t, opts{PID1: true, Args: []string{"--forward", "off"}, Program: []string{"/bin/sh", "-c", "kill -" + tc.sig + " $$"}})
		if got := wait(in); got != tc.want {
			t.Errorf("program killed by SIG%s: shim exit %d, want %d", tc.sig, got, tc.want)
		}
	}
}

func TestPID1StartErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		program string
		want    int
		msg     string
	}{
		{filepath.Join(dir, "missing"), 127, "no such file or directory"},
		{dir, 126, "is a directory"},
		{"no-such-program-anywhere", 127, "not found in PATH"},
	} {
		in := start(t, opts{PID1: true, Program: []string{tc.program}})
		if got := wait(in); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.program, got, tc.want)
		}
		if got := in.Stderr.String(); !strings.Contains(got, tc.msg) || strings.Count(got, "\n") != 1 {
			t.Errorf("%s: want one line with %q, got %q", tc.program, tc.msg, got)
		}
	}
}

// The core of the stop policy: whichever stop request the platform sends,
// the backend gets exactly one stop signal, its process group (the Node
// server) gets none, and the shim exits with the backend's clean status.
func TestPID1StopRequestBecomesOneSIGINT(t *testing.T) {
	for _, tc := range []struct {
		send syscall.Signal
		args []string
		want string
	}{
		{syscall.SIGTERM, nil, "SIGINT"},
		{syscall.SIGINT, nil, "SIGINT"},
		{syscall.SIGQUIT, nil, "SIGINT"},
		{syscall.SIGTERM, []string{"--stop-signal", "SIGTERM"}, "SIGTERM"},
	} {
		t.Run(unix.SignalName(tc.send)+"->"+tc.want, func(t *testing.T) {
			in := start(t, opts{PID1: true, Args: append([]string{"--forward", "off"}, tc.args...), Env: []string{"HELPER_GRANDCHILD=1"}})
			in.Line("ready ")
			in.Line("grandchild ready")
			send(in, tc.send)
			code := wait(in)
			wantCode := 0
			if tc.want == "SIGTERM" {
				wantCode = 143
			}
			if code != wantCode {
				t.Errorf("shim exit %d, want %d", code, wantCode)
			}
			if n := in.CountLines("backend got " + tc.want); n != 1 {
				t.Errorf("backend got %s %d times, want exactly once", tc.want, n)
			}
			for _, l := range in.Stdout.All() {
				if l == "grandchild got SIGINT" || (strings.HasPrefix(l, "backend got") && l != "backend got "+tc.want) {
					t.Errorf("unexpected %q", l)
				}
			}
		})
	}
}

func TestPID1SecondStopEscalates(t *testing.T) {
	in := start(t, opts{PID1: true, Args: []string{"--forward", "off", "--grace", "0"}, Env: []string{"HELPER_ON_INT=second-exits"}})
	in.Line("ready ")
	send(in, syscall.SIGTERM)
	in.Line("backend got SIGINT")
	send(in, syscall.SIGTERM)
	if code := wait(in); code != 1 {
		t.Fatalf("exit %d, want 1 (the backend's forced exit)", code)
	}
	if n := in.CountLines("backend got SIGINT"); n != 2 {
		t.Fatalf("backend got SIGINT %d times, want 2", n)
	}
}

func TestPID1ThirdStopKills(t *testing.T) {
	in := start(t, opts{PID1: true, Args: []string{"--forward", "off", "--grace", "0"}, Env: []string{"HELPER_ON_INT=ignore", "HELPER_GRANDCHILD=1"}})
	in.Line("ready ")
	in.Line("grandchild ready")
	// Standard signals do not queue: wait for each to be taken before
	// sending the next, or the kernel merges them.
	for i := 1; i <= 3; i++ {
		send(in, syscall.SIGTERM)
		in.WaitLogCount(fmt.Sprintf("stop request %d", i), 1, 20*time.Second)
	}
	if code := wait(in); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
}

func TestPID1GraceKillsGroup(t *testing.T) {
	in := start(t, opts{PID1: true, Args: []string{"--forward", "off", "--grace", "300ms"}, Env: []string{"HELPER_ON_INT=ignore", "HELPER_GRANDCHILD=1"}})
	in.Line("ready ")
	in.Line("grandchild ready")
	send(in, syscall.SIGTERM)
	if code := wait(in); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	if !strings.Contains(in.Stderr.String(), "still running 300ms after the stop request; sending SIGKILL") {
		t.Fatalf("no grace log line")
	}
	if n := in.CountLines("backend got SIGINT"); n != 1 {
		t.Fatalf("backend got SIGINT %d times, want 1", n)
	}
}

func TestPID1ForwardsOtherSignals(t *testing.T) {
	in := start(t, opts{PID1: true, Args: []string{"--forward", "off"}, Env: []string{"HELPER_GRANDCHILD=1"}})
	in.Line("ready ")
	in.Line("grandchild ready")
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGPWR}
	for _, s := range sigs {
		send(in, s)
		in.Line("backend got " + unix.SignalName(s))
	}
	send(in, syscall.SIGTERM)
	if code := wait(in); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range sigs {
		if n := in.CountLines("backend got " + unix.SignalName(s)); n != 1 {
			t.Errorf("backend got %s %d times", unix.SignalName(s), n)
		}
		if n := in.CountLines("grandchild got " + unix.SignalName(s)); n != 0 {
			t.Errorf("grandchild got %s", unix.SignalName(s))
		}
	}
}

// zombies lists children of pid in state Z.
func zombies(pid int) []int {
	var out []int
	for _, c := range proc.Children(pid) {
		if c.Zombie() {
			out = append(out, c.PID)
		}
	}
	return out
}

// The catatonit #4 shape: the backend's exit coalesces with orphans'
// SIGCHLDs. The status must be right every time and the shim must not hang.
func TestPID1ExitWhileOrphansChurn(t *testing.T) {
	for i := range 60 {
		code := (i * 37) % 256
		in := start(t, opts{PID1: true, Args: []string{"--forward", "off"}, Env: []string{"HELPER_ORPHANS=20", "HELPER_EXIT=" + strconv.Itoa(code)}})
		if got := wait(in); got != code {
			t.Fatalf("run %d: exit %d, want %d", i, got, code)
		}
	}
}

// Default forward: a Node-style callback to http://127.0.0.1:80 made before
// the backend listens on 3210 is held, then answered once it does.
func TestPID1ForwardsPort80ToBackend(t *testing.T) {
	in := start(t, opts{PID1: true, Env: []string{
		"HELPER_LISTEN=127.0.0.1:3210", "HELPER_LISTEN_DELAY=700ms",
		"HELPER_CALLBACK=http://127.0.0.1/version",
	}})
	if l := in.Line("callback"); l != "callback http://127.0.0.1/version: 200 unknown via 127.0.0.1:3210" {
		t.Fatalf("callback through 127.0.0.1:80: %q", l)
	}
	send(in, syscall.SIGTERM)
	if code := wait(in); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(in.Stderr.String(), "forwarding 127.0.0.1:80 -> 127.0.0.1:3210 (default)") {
		t.Errorf("startup line lacks the forward: %q", in.Stderr)
	}
}

// Go's runtime changes the shim's signal dispositions and mask; the child
// must still start with none ignored, even when the shim itself was started
// with signals ignored (nohup, some CI runners), and with the signal mask the
// shim was started with.
func TestPID1ChildStartsWithDefaultSignals(t *testing.T) {
	for _, tc := range []struct {
		block []unix.Signal
		want  string
	}{
		{nil, "SigBlk:\t0000000000000000 SigIgn:\t0000000000000000"},
		{[]unix.Signal{unix.SIGUSR2}, "SigBlk:\t0000000000000800 SigIgn:\t0000000000000000"}, // SIGUSR2 stays blocked
	} {
		// grep changes no signal state, so it shows what it was started
		// with. 32 and 33 are signals the Go runtime never touches; shells
		// cannot ignore them, so the test binary does it before exec'ing
		// the shim.
		in := start(t, opts{PID1: true, Args: []string{"--forward", "off"}, Ignore: []unix.Signal{1, 2, 3, 10, 12, 13, 14, 15, 32, 33}, Block: tc.block,
			Program: []string{"/bin/grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"}})
		if code := wait(in); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if got := strings.Join(in.Stdout.All(), " "); got != tc.want {
			t.Errorf("shim started with %v blocked: child started with %q, want %q", tc.block, got, tc.want)
		}
	}
}

// Orphans reach the shim and are reaped while the backend runs: as PID 1,
// and under Fly's init, docker run --init or shareProcessNamespace, where
// the shim is not PID 1 but a child subreaper. Either way the stop works the
// same and the backend's group (the grandchild) gets no SIGINT.
func TestReapsOrphans(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid1 bool
		n    int
	}{{"PID 1", true, 150}, {"subreaper", false, 50}} {
		t.Run(tc.name, func(t *testing.T) {
			in := start(t, opts{PID1: tc.pid1, Args: []string{"--forward", "off", "-v"}, Env: []string{"HELPER_ORPHANS=" + strconv.Itoa(tc.n), "HELPER_GRANDCHILD=1"}})
			in.Line("ready ")
			in.Line("grandchild ready")
			in.WaitLogCount("reaped pid", tc.n, 20*time.Second)
			if z := zombies(in.PID); len(z) > 0 {
				t.Fatalf("zombies left: %v", z)
			}
			send(in, syscall.SIGTERM)
			if code := wait(in); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if n := in.CountLines("backend got SIGINT"); n != 1 || in.CountLines("grandchild got SIGINT") != 0 {
				t.Fatalf("backend got SIGINT %d times, grandchild %d", n, in.CountLines("grandchild got SIGINT"))
			}
		})
	}
}

// A port that cannot be bound stops the shim before the backend starts.
func TestBindFailureStopsBeforeStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	in := start(t, opts{Args: []string{"--forward", busy.Addr().String() + "=127.0.0.1:3210"}})
	if code := wait(in); code != exitSetup {
		t.Fatalf("exit %d, want %d", code, exitSetup)
	}
	if len(in.Stdout.All()) != 0 {
		t.Fatalf("the backend ran: %q", in.Stdout.All())
	}
	got := in.Stderr.String()
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, "listen "+busy.Addr().String()) || !strings.Contains(got, "address already in use") {
		t.Fatalf("want one line naming the address and cause, got %q", got)
	}
}

// Origins other than port 80: Convex's compose file uses
// http://127.0.0.1:${PORT}; localhost may resolve to ::1 first; the site
// origin stands for port 3211. Each callback must reach the fake backend.
func TestPID1OriginForwards(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cloud     string
		site      string
		callbacks map[string]string // URL -> the listener that must answer
	}{
		{"compose PORT=8080", "http://127.0.0.1:8080", "http://127.0.0.1:8081", map[string]string{
			"http://127.0.0.1:8080/version": "127.0.0.1:3210",
			"http://127.0.0.1:8081/version": "127.0.0.1:3211",
			"http://127.0.0.1/version":      "127.0.0.1:3210", // the default stays
		}},
		{"localhost", "http://localhost", "", map[string]string{
			"http://127.0.0.1/version": "127.0.0.1:3210",
			"http://[::1]/version":     "127.0.0.1:3210",
		}},
		// As Node's new URL reads them: 127.0.0.1:80, the default's own
		// listener (no "address already in use"), and 0.0.0.0, which
		// Linux connects to 127.0.0.1.
		{"as Node parses them", "http://0x7f.1:080", `http:0.0.0.0:8094\x`, map[string]string{
			"http://127.0.0.1/version":    "127.0.0.1:3210",
			"http://0.0.0.0:8094/version": "127.0.0.1:3211",
		}},
		// The backend listens on IPv4 only.
		{"[::1] on the backend's port", "http://[::1]:3210", "", map[string]string{
			"http://[::1]:3210/version": "127.0.0.1:3210",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var urls []string
			for u := range tc.callbacks {
				urls = append(urls, u)
			}
			in := start(t, opts{PID1: true, Env: []string{
				"CONVEX_CLOUD_ORIGIN=" + tc.cloud, "CONVEX_SITE_ORIGIN=" + tc.site,
				"HELPER_LISTEN=127.0.0.1:3210,127.0.0.1:3211", "HELPER_LISTEN_DELAY=200ms",
				"HELPER_CALLBACK=" + strings.Join(urls, ","),
			}})
			for u, via := range tc.callbacks {
				if l, want := in.Line("callback "+u), "callback "+u+": 200 unknown via "+via; l != want {
					t.Errorf("got %q, want %q", l, want)
				}
			}
			send(in, syscall.SIGTERM)
			if code := wait(in); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// --check from inside the shim's network namespace, as a HEALTHCHECK runs.
func TestPID1Check(t *testing.T) {
	check := func(in *pid1test.Instance) (int, string) {
		cmd := exec.Command("nsenter", "-t", strconv.Itoa(in.PID), "-n", "--", pid1test.ShimBin, "--check")
		cmd.Env = append(os.Environ(), "CONVEX_CLOUD_ORIGIN=http://127.0.0.1:8080")
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	env := []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:8080"}

	up := start(t, opts{PID1: true, Env: append(env, "HELPER_LISTEN=127.0.0.1:3210")})
	up.Line("listening")
	code, out := check(up)
	if code != 0 || strings.Count(out, " ok\n") != 3 { // two forwards, one fetch preload route
		t.Errorf("check with a backend: exit %d\n%s", code, out)
	}
	t.Logf("check with a backend:\n%s", out)

	down := start(t, opts{PID1: true, Env: env})
	down.Line("ready ")
	code, out = check(down)
	if code != exitCheckFailed || !strings.Contains(out, "FAIL: backend at 127.0.0.1:3210") || !strings.Contains(out, "connection refused") {
		t.Errorf("check without a backend: exit %d\n%s", code, out)
	}
	t.Logf("check without a backend:\n%s", out)
}

// docker run -it: the shim is a session leader with the terminal as its
// controlling tty. Ctrl-C makes the terminal send SIGINT to its foreground
// process group; the backend must not be in it, or it would get that SIGINT
// and the shim's, and the second forces an undrained exit.
func TestPID1CtrlCOnTerminalIsOneSIGINT(t *testing.T) {
	in := start(t, opts{PID1: true, Terminal: true, Env: []string{"HELPER_GRANDCHILD=1"}})
	in.Line("ready ")
	in.Line("grandchild ready")
	if _, err := in.TTY.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if code := wait(in); code != 0 {
		t.Fatalf("shim exit %d; terminal:\n%s", code, in.Stdout)
	}
	if in.CountLines("backend got SIGINT") != 1 || in.CountLines("grandchild got SIGINT") != 0 {
		t.Fatalf("want exactly one SIGINT for the backend and none for its group; terminal:\n%s", in.Stdout)
	}
}

// When the shim is not PID 1 and is SIGKILLed, nothing can clean up after
// it: the kernel's parent-death signal must end the backend (default), or
// leave it running when the operator chose "none".
func TestParentDeathSignal(t *testing.T) {
	for _, tc := range []struct {
		setting string
		dies    bool
	}{{"", true}, {"none", false}} {
		t.Run("setting="+tc.setting, func(t *testing.T) {
			args := []string{"--forward", "off"}
			if tc.setting != "" {
				args = append(args, "--parent-death-signal", tc.setting)
			}
			in := start(t, opts{Args: args})
			var pid int
			fmt.Sscanf(in.Line("ready "), "ready pid=%d", &pid)
			t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
			send(in, syscall.SIGKILL)
			<-in.Gone // not wait(): a surviving backend keeps stdout open
			gone := func() bool {
				st, err := proc.ReadStat(pid)
				return err != nil || st.Zombie()
			}
			deadline := time.Now().Add(5 * time.Second)
			for !gone() && tc.dies && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if gone() != tc.dies {
				t.Fatalf("backend %d gone: %v, want %v", pid, gone(), tc.dies)
			}
			unix.Kill(pid, unix.SIGKILL)
			wait(in)
		})
	}
}

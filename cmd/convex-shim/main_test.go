package main

// End-to-end tests of the real convex-shim binary, most of them as PID 1 of
// a fresh PID and network namespace: the only place where "a Go PID 1 that
// does not handle SIGTERM exits 2" and orphan reaping can be seen. They need
// root (or a user namespace); where the kernel refuses they fail with its
// reason rather than skip.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var shimBin string

func TestMain(m *testing.M) {
	if list := os.Getenv("SHIM_EXEC_IGNORING"); list != "" {
		execIgnoring(list)
	}
	if role := os.Getenv("SHIM_HELPER"); role != "" {
		helperMain(role)
		return
	}
	dir, err := os.MkdirTemp("", "convex-shim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shimBin = filepath.Join(dir, "convex-shim")
	build := exec.Command("go", "build", "-o", shimBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build convex-shim: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type opts struct {
	pid1    bool     // PID 1 of a new PID namespace (and a new network namespace with lo up)
	env     []string // added to the backend's environment
	args    []string // shim flags
	program []string // default: this binary as "backend"
	ignore  string   // signals (numbers, comma-separated) the shim is started with ignored
	block   string   // ... and with blocked (only together with ignore)
}

// instance is one running shim, its stdout split into lines.
type instance struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	seen   []string
	stderr *syncBuffer
	done   chan struct{}
	status int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, o opts) *instance {
	t.Helper()
	program := o.program
	if program == nil {
		program = []string{os.Args[0]}
	}
	argv := append(append(append([]string{shimBin}, o.args...), "--"), program...)
	if o.ignore != "" {
		argv = append([]string{os.Args[0]}, argv...)
	}
	script := `exec "$@"`
	if o.pid1 {
		// A new network namespace starts with lo down: bind works but
		// connect fails until it is up.
		script = "ip link set lo up || exit 90; " + script
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, argv...)...)
	cmd.Env = append(append(os.Environ(), "SHIM_HELPER=backend", "SHIM_EXEC_IGNORING="+o.ignore, "SHIM_EXEC_BLOCKING="+o.block), o.env...)
	if o.pid1 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNET}
	}
	inst := &instance{t: t, cmd: cmd, lines: make(chan string, 1024), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = inst.stderr
	// A backend that outlives the shim (a test of exactly that) holds the
	// stderr pipe open; do not wait for it forever.
	cmd.WaitDelay = time.Second
	// Our own pipe, not StdoutPipe: Wait closes that one as soon as the shim
	// exits, losing lines still unread. This one reads until every writer,
	// the shim and all it left, is gone.
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatalf("start shim in new PID and network namespaces: %v (needs root or CAP_SYS_ADMIN; the kernel refused)", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			inst.lines <- sc.Text()
		}
		close(inst.lines)
	}()
	go func() {
		cmd.Wait()
		inst.status = exitCodeOf(cmd.ProcessState)
		close(inst.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-inst.done
		if t.Failed() {
			t.Logf("shim stderr:\n%s\nstdout lines:\n%s", inst.stderr, strings.Join(inst.seen, "\n"))
		}
	})
	return inst
}

func exitCodeOf(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal()) // the shim itself died of a signal: never expected
	}
	return ps.ExitCode()
}

// waitLine waits for a stdout line with the given prefix and returns it.
func (in *instance) waitLine(prefix string) string {
	in.t.Helper()
	for _, l := range in.seen {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-in.lines:
			if !ok {
				in.t.Fatalf("stdout closed before a line starting %q", prefix)
			}
			in.seen = append(in.seen, l)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			in.t.Fatalf("no stdout line starting %q within 20s", prefix)
		}
	}
}

// wait waits for the shim to exit, collects the rest of stdout and returns
// the exit code.
func (in *instance) wait() int {
	in.t.Helper()
	select {
	case <-in.done:
	case <-time.After(30 * time.Second):
		in.t.Fatalf("shim did not exit within 30s")
	}
	for l := range in.lines {
		in.seen = append(in.seen, l)
	}
	return in.status
}

func (in *instance) signal(sig syscall.Signal) {
	in.t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatalf("signal shim: %v", err)
	}
}

// count counts stdout lines equal to s (after wait).
func (in *instance) count(s string) int {
	n := 0
	for _, l := range in.seen {
		if l == s {
			n++
		}
	}
	return n
}

// waitStderr waits until stderr contains substr at least n times.
func (in *instance) waitStderr(substr string, n int) {
	in.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(in.stderr.String(), substr) < n {
		if time.Now().After(deadline) {
			in.t.Fatalf("stderr has %d of %d %q", strings.Count(in.stderr.String(), substr), n, substr)
		}
		select {
		case <-in.done:
			if strings.Count(in.stderr.String(), substr) < n {
				in.t.Fatalf("shim exited with %d before stderr had %d %q", in.status, n, substr)
			}
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestPID1ExitCodesPassThrough(t *testing.T) {
	for code := range 256 {
		in := start(t, opts{pid1: true, args: []string{"--forward", "off"}, program: []string{"/bin/sh", "-c", "exit " + strconv.Itoa(code)}})
		if got := in.wait(); got != code {
			t.Fatalf("program exit %d: shim exit %d", code, got)
		}
	}
}

func TestPID1DeathBySignal(t *testing.T) {
	for _, tc := range []struct {
		sig  string
		want int
	}{{"SEGV", 139}, {"ABRT", 134}, {"KILL", 137}, {"TERM", 143}, {"INT", 130}} {
		in := start(t, opts{pid1: true, args: []string{"--forward", "off"}, program: []string{"/bin/sh", "-c", "kill -" + tc.sig + " $$"}})
		if got := in.wait(); got != tc.want {
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
		in := start(t, opts{pid1: true, program: []string{tc.program}})
		if got := in.wait(); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.program, got, tc.want)
		}
		if got := in.stderr.String(); !strings.Contains(got, tc.msg) || strings.Count(got, "\n") != 1 {
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
			in := start(t, opts{pid1: true, args: append([]string{"--forward", "off"}, tc.args...), env: []string{"HELPER_GRANDCHILD=1"}})
			in.waitLine("ready ")
			in.waitLine("grandchild ready")
			in.signal(tc.send)
			code := in.wait()
			wantCode := 0
			if tc.want == "SIGTERM" {
				wantCode = 143
			}
			if code != wantCode {
				t.Errorf("shim exit %d, want %d", code, wantCode)
			}
			if n := in.count("backend got " + tc.want); n != 1 {
				t.Errorf("backend got %s %d times, want exactly once", tc.want, n)
			}
			for _, l := range in.seen {
				if l == "grandchild got SIGINT" || (strings.HasPrefix(l, "backend got") && l != "backend got "+tc.want) {
					t.Errorf("unexpected %q", l)
				}
			}
		})
	}
}

func TestPID1SecondStopEscalates(t *testing.T) {
	in := start(t, opts{pid1: true, args: []string{"--forward", "off", "--grace", "0"}, env: []string{"HELPER_ON_INT=second-exits"}})
	in.waitLine("ready ")
	in.signal(syscall.SIGTERM)
	in.waitLine("backend got SIGINT")
	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 1 {
		t.Fatalf("exit %d, want 1 (the backend's forced exit)", code)
	}
	if n := in.count("backend got SIGINT"); n != 2 {
		t.Fatalf("backend got SIGINT %d times, want 2", n)
	}
}

func TestPID1ThirdStopKills(t *testing.T) {
	in := start(t, opts{pid1: true, args: []string{"--forward", "off", "--grace", "0"}, env: []string{"HELPER_ON_INT=ignore", "HELPER_GRANDCHILD=1"}})
	in.waitLine("ready ")
	in.waitLine("grandchild ready")
	// Standard signals do not queue: wait for each to be taken before
	// sending the next, or the kernel merges them.
	for i := 1; i <= 3; i++ {
		in.signal(syscall.SIGTERM)
		in.waitStderr(fmt.Sprintf("stop request %d", i), 1)
	}
	if code := in.wait(); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
}

func TestPID1GraceKillsGroup(t *testing.T) {
	in := start(t, opts{pid1: true, args: []string{"--forward", "off", "--grace", "300ms"}, env: []string{"HELPER_ON_INT=ignore", "HELPER_GRANDCHILD=1"}})
	in.waitLine("ready ")
	in.waitLine("grandchild ready")
	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	if !strings.Contains(in.stderr.String(), "still running 300ms after the stop request; sending SIGKILL") {
		t.Fatalf("no grace log line")
	}
	if n := in.count("backend got SIGINT"); n != 1 {
		t.Fatalf("backend got SIGINT %d times, want 1", n)
	}
}

func TestPID1ForwardsOtherSignals(t *testing.T) {
	in := start(t, opts{pid1: true, args: []string{"--forward", "off"}, env: []string{"HELPER_GRANDCHILD=1"}})
	in.waitLine("ready ")
	in.waitLine("grandchild ready")
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGPWR}
	for _, s := range sigs {
		in.signal(s)
		in.waitLine("backend got " + unix.SignalName(s))
	}
	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range sigs {
		if n := in.count("backend got " + unix.SignalName(s)); n != 1 {
			t.Errorf("backend got %s %d times", unix.SignalName(s), n)
		}
		if n := in.count("grandchild got " + unix.SignalName(s)); n != 0 {
			t.Errorf("grandchild got %s", unix.SignalName(s))
		}
	}
}

// zombies lists children of pid in state Z, from the host's /proc.
func zombies(pid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name())
		}
	}
	return out
}

// The catatonit #4 shape: the backend's exit coalesces with orphans'
// SIGCHLDs. The status must be right every time and the shim must not hang.
func TestPID1ExitWhileOrphansChurn(t *testing.T) {
	for i := range 60 {
		code := (i * 37) % 256
		in := start(t, opts{pid1: true, args: []string{"--forward", "off"}, env: []string{"HELPER_ORPHANS=20", "HELPER_EXIT=" + strconv.Itoa(code)}})
		if got := in.wait(); got != code {
			t.Fatalf("run %d: exit %d, want %d", i, got, code)
		}
	}
}

// Default forward: a Node-style callback to http://127.0.0.1:80 made before
// the backend listens on 3210 is held, then answered once it does.
func TestPID1ForwardsPort80ToBackend(t *testing.T) {
	in := start(t, opts{pid1: true, env: []string{
		"HELPER_LISTEN=127.0.0.1:3210", "HELPER_LISTEN_DELAY=700ms",
		"HELPER_CALLBACK=http://127.0.0.1/version",
	}})
	if l := in.waitLine("callback"); l != "callback http://127.0.0.1/version: 200 unknown via 127.0.0.1:3210" {
		t.Fatalf("callback through 127.0.0.1:80: %q", l)
	}
	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(in.stderr.String(), "forwarding 127.0.0.1:80 -> 127.0.0.1:3210 (default)") {
		t.Errorf("startup line lacks the forward: %q", in.stderr)
	}
}

// Go's runtime changes the shim's signal dispositions and mask; the child
// must still start with none ignored, even when the shim itself was started
// with signals ignored (nohup, some CI runners), and with the signal mask the
// shim was started with.
func TestPID1ChildStartsWithDefaultSignals(t *testing.T) {
	for _, tc := range []struct {
		block, want string
	}{
		{"", "SigBlk:\t0000000000000000 SigIgn:\t0000000000000000"},
		{"12", "SigBlk:\t0000000000000800 SigIgn:\t0000000000000000"}, // SIGUSR2 stays blocked
	} {
		// grep changes no signal state, so it shows what it was started
		// with. 32 and 33 are signals the Go runtime never touches; shells
		// cannot ignore them, so the test binary does it before exec'ing
		// the shim.
		in := start(t, opts{pid1: true, args: []string{"--forward", "off"}, ignore: "1,2,3,10,12,13,14,15,32,33", block: tc.block,
			program: []string{"/bin/grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"}})
		if code := in.wait(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if got := strings.Join(in.seen, " "); got != tc.want {
			t.Errorf("shim started with %q blocked: child started with %q, want %q", tc.block, got, tc.want)
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
			in := start(t, opts{pid1: tc.pid1, args: []string{"--forward", "off", "-v"}, env: []string{"HELPER_ORPHANS=" + strconv.Itoa(tc.n), "HELPER_GRANDCHILD=1"}})
			in.waitLine("ready ")
			in.waitLine("grandchild ready")
			in.waitStderr("reaped pid", tc.n)
			if z := zombies(in.cmd.Process.Pid); len(z) > 0 {
				t.Fatalf("zombies left: %v", z)
			}
			in.signal(syscall.SIGTERM)
			if code := in.wait(); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if n := in.count("backend got SIGINT"); n != 1 || in.count("grandchild got SIGINT") != 0 {
				t.Fatalf("backend got SIGINT %d times, grandchild %d", n, in.count("grandchild got SIGINT"))
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
	in := start(t, opts{args: []string{"--forward", busy.Addr().String() + "=127.0.0.1:3210"}})
	if code := in.wait(); code != exitSetup {
		t.Fatalf("exit %d, want %d", code, exitSetup)
	}
	if len(in.seen) != 0 {
		t.Fatalf("the backend ran: %q", in.seen)
	}
	got := in.stderr.String()
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			var urls []string
			for u := range tc.callbacks {
				urls = append(urls, u)
			}
			in := start(t, opts{pid1: true, env: []string{
				"CONVEX_CLOUD_ORIGIN=" + tc.cloud, "CONVEX_SITE_ORIGIN=" + tc.site,
				"HELPER_LISTEN=127.0.0.1:3210,127.0.0.1:3211", "HELPER_LISTEN_DELAY=200ms",
				"HELPER_CALLBACK=" + strings.Join(urls, ","),
			}})
			for u, via := range tc.callbacks {
				if l, want := in.waitLine("callback "+u), "callback "+u+": 200 unknown via "+via; l != want {
					t.Errorf("got %q, want %q", l, want)
				}
			}
			in.signal(syscall.SIGTERM)
			if code := in.wait(); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// --check from inside the shim's network namespace, as a HEALTHCHECK runs.
func TestPID1Check(t *testing.T) {
	check := func(in *instance) (int, string) {
		cmd := exec.Command("nsenter", "-t", strconv.Itoa(in.cmd.Process.Pid), "-n", "--", shimBin, "--check")
		cmd.Env = append(os.Environ(), "CONVEX_CLOUD_ORIGIN=http://127.0.0.1:8080")
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	env := []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:8080"}

	up := start(t, opts{pid1: true, env: append(env, "HELPER_LISTEN=127.0.0.1:3210")})
	up.waitLine("listening")
	code, out := check(up)
	if code != 0 || strings.Count(out, " ok\n") != 3 { // two forwards, one fetch preload route
		t.Errorf("check with a backend: exit %d\n%s", code, out)
	}
	t.Logf("check with a backend:\n%s", out)

	down := start(t, opts{pid1: true, env: env})
	down.waitLine("ready ")
	code, out = check(down)
	if code != exitCheckFailed || !strings.Contains(out, "FAIL: backend at 127.0.0.1:3210") || !strings.Contains(out, "connection refused") {
		t.Errorf("check without a backend: exit %d\n%s", code, out)
	}
	t.Logf("check without a backend:\n%s", out)
}

// openPTY returns a pseudo-terminal's master and its slave, opened.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// docker run -it: the shim is a session leader with the terminal as its
// controlling tty. Ctrl-C makes the terminal send SIGINT to its foreground
// process group; the backend must not be in it, or it would get that SIGINT
// and the shim's, and the second forces an undrained exit.
func TestPID1CtrlCOnTerminalIsOneSIGINT(t *testing.T) {
	master, slave := openPTY(t)
	cmd := exec.Command("/bin/sh", "-c", `ip link set lo up && exec "$@"`, "sh", shimBin, "--", os.Args[0])
	cmd.Env = append(os.Environ(), "SHIM_HELPER=backend", "HELPER_GRANDCHILD=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start on a pty in new namespaces: %v", err)
	}
	slave.Close()
	lines := make(chan string, 100)
	var seen []string
	go func() {
		sc := bufio.NewScanner(master)
		for sc.Scan() {
			// The terminal echoes Ctrl-C as "^C" in front of the next line.
			lines <- strings.TrimPrefix(strings.TrimRight(sc.Text(), "\r"), "^C")
		}
		close(lines)
	}()
	waitFor := func(prefix string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("terminal closed before %q; saw %q", prefix, seen)
				}
				seen = append(seen, l)
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q on the terminal; saw %q", prefix, seen)
			}
		}
	}
	waitFor("ready ")
	waitFor("grandchild ready")
	if _, err := master.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	err := cmd.Wait()
	for l := range lines {
		seen = append(seen, l)
	}
	if err != nil {
		t.Fatalf("shim: %v; terminal:\n%s", err, strings.Join(seen, "\n"))
	}
	count := map[string]int{}
	for _, l := range seen {
		count[l]++
	}
	if count["backend got SIGINT"] != 1 || count["grandchild got SIGINT"] != 0 {
		t.Fatalf("want exactly one SIGINT for the backend and none for its group; terminal:\n%s", strings.Join(seen, "\n"))
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
			in := start(t, opts{args: args})
			var pid int
			fmt.Sscanf(in.waitLine("ready "), "ready pid=%d", &pid)
			t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
			in.signal(syscall.SIGKILL)
			<-in.done // not wait(): a surviving backend keeps stdout open
			gone := func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				return err != nil || strings.Contains(string(b), ") Z ")
			}
			deadline := time.Now().Add(5 * time.Second)
			for !gone() && tc.dies && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if gone() != tc.dies {
				t.Fatalf("backend %d gone: %v, want %v", pid, gone(), tc.dies)
			}
			unix.Kill(pid, unix.SIGKILL)
			in.wait()
		})
	}
}

// Package pid1test runs the real convex-shim binary the way a container
// runtime does, for the end-to-end tests (e2e/pid1, e2e/reliability): as
// PID 1 of fresh PID and network namespaces (or, for the cases where
// something else is PID 1, as a child subreaper), with stdout and stderr
// split into lines the tests wait on. It needs root or CAP_SYS_ADMIN; where
// the kernel refuses, Start fails the test with its reason rather than skip.
//
// The test binary doubles as every program the shim supervises (the os/exec
// helper-process pattern): started with RoleVar set, it runs that role
// instead of the tests. A test package's TestMain is
//
//	func TestMain(m *testing.M) {
//		pid1test.Dispatch(helperMain) // in a helper role: run it and exit
//		os.Exit(pid1test.Run(m, ""))  // build the shim, run the tests
//	}
//
// Helpers print one line per event on stdout (dumb-init's print_signals
// idea: every signal a process receives is a line); the tests wait on those
// lines and on the shim's log lines, never on fixed sleeps.
package pid1test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/proc"
	"github.com/convex-shim/convex-shim/internal/sigdisp"
	"golang.org/x/sys/unix"
)

// RoleVar names the helper role this test binary plays; empty: run tests.
const RoleVar = "PID1TEST_ROLE"

const (
	// runVar tags every process of one Start, so that what a subreaper-mode
	// test leaves behind can be found and killed.
	runVar = "PID1TEST_RUN"
	// execVar names a file with an execSpec: the test binary then sets up
	// the process state it describes and execs its arguments.
	execVar = "PID1TEST_EXEC"
)

var (
	// ShimBin is the real binary, built from ./cmd/convex-shim by Run.
	ShimBin string
	// HelperBin is a copy of this test binary that any user can execute
	// (uid 1000 runs it in the non-root tests).
	HelperBin string
)

// Observed are the signals the helpers record: the stop requests and every
// signal the shim forwards that a Go program can catch.
var Observed = []os.Signal{
	unix.SIGINT, unix.SIGTERM, unix.SIGQUIT, unix.SIGHUP, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGWINCH, unix.SIGALRM, unix.SIGPWR,
}

// Dispatch runs the role this process was started in, if any, and exits
// when it returns; otherwise it returns at once. TestMain calls it first.
func Dispatch(roles func(role string)) {
	if spec := os.Getenv(execVar); spec != "" {
		execWith(spec)
	}
	if role := os.Getenv(RoleVar); role != "" {
		roles(role)
		os.Exit(0)
	}
}

// Self returns this binary in another role, sharing stdout and stderr.
func Self(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), RoleVar+"="+role), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

// Run builds the shim into a temporary directory, or copies prebuilt there
// if set (another build, such as an older commit's, to see a test catch a
// bug), copies the test binary beside it, runs the tests and removes the
// directory. It returns the exit code for os.Exit.
func Run(m *testing.M, prebuilt string) int {
	dir, err := os.MkdirTemp("", "convex-shim-pid1test-")
	if err == nil {
		err = os.Chmod(dir, 0o755) // uid 1000 runs the binaries too
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ShimBin = filepath.Join(dir, "convex-shim")
	if prebuilt != "" {
		err = copyFile(prebuilt, ShimBin)
	} else {
		err = BuildShim(ShimBin)
	}
	if err == nil {
		HelperBin = filepath.Join(dir, "helper")
		err = copyFile(os.Args[0], HelperBin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// BuildShim builds ./cmd/convex-shim, static, as out.
func BuildShim(out string) error {
	build := exec.Command("go", "build", "-o", out, "github.com/convex-shim/convex-shim/cmd/convex-shim")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build convex-shim: %w\n%s", err, b)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return os.WriteFile(dst, b, 0o755)
}

// Options says how to start one shim.
type Options struct {
	PID1    bool     // PID 1 of a new PID namespace; otherwise a child subreaper
	NoNet   bool     // no new network namespace (only for runs with --forward off)
	Setup   string   // shell run inside the namespaces before exec (after lo is up)
	Wrap    []string // exec'd in front of the shim (setpriv ..., prlimit ...)
	Env     []string // added to the shim's (and so the backend's) environment
	Args    []string // shim flags
	Program []string // default: HelperBin in role "backend"
	Direct  bool     // no /bin/sh in front: the shim is exec'd directly (implies no Setup)
	// ExactEnv, if set, is the shim's whole environment, byte for byte
	// (duplicates and all), plus the role and the run tag; implies Direct.
	ExactEnv []string
	// Ignore and Block are signals the shim is started with ignored and
	// blocked, as a parent like nohup or some CI runners leaves them.
	Ignore, Block []unix.Signal
	// HoldStderr leaves the shim's stderr pipe unread until Release: a log
	// consumer that has stalled.
	HoldStderr bool
	// Terminal starts the shim as `docker run -it` does: a session leader
	// whose stdin, stdout and stderr are a new pseudo-terminal, its
	// controlling terminal. Stdout then has all its output; Instance.TTY is
	// the terminal's master, to type on.
	Terminal bool
}

// execSpec is what the exec wrapper does before it execs the shim.
type execSpec struct {
	Ignore, Block []unix.Signal
	Env           []string // nil: the wrapper's own, less execVar
}

// Instance is one running shim, its stdout (the backend's) and stderr (its
// own log, and the backend's) split into lines.
type Instance struct {
	T        *testing.T
	Cmd      *exec.Cmd
	PID      int // host pid of the shim
	Tag      string
	Stdout   *Lines
	Stderr   *Lines
	Status   int           // exit code, set once Gone is closed; see ExitCode
	ExitedAt time.Time     // set once Gone is closed
	Gone     chan struct{} // closed when the shim has exited
	TTY      *os.File      // the terminal's master, with Options.Terminal
	Done     chan struct{} // closed when it has exited and its output is read
	gate     chan struct{} // closed by Release when HoldStderr
	stderrR  *os.File
}

var runSeq struct {
	sync.Mutex
	n int
}

// Start starts a shim; Cleanup kills it and, when it was not PID 1, every
// process of its run that is left.
func Start(t *testing.T, o Options) *Instance {
	t.Helper()
	program := o.Program
	if program == nil {
		program = []string{HelperBin}
	}
	runSeq.Lock()
	runSeq.n++
	tag := fmt.Sprintf("%d-%d", os.Getpid(), runSeq.n)
	runSeq.Unlock()
	env := append(append(os.Environ(), RoleVar+"=backend", runVar+"="+tag), o.Env...)

	argv := append(append(append(append([]string{}, o.Wrap...), ShimBin), o.Args...), "--")
	argv = append(argv, program...)
	if o.ExactEnv != nil || o.Ignore != nil || o.Block != nil {
		// os/exec and shells tidy an environment and cannot ignore the
		// signals the Go runtime never touches; the wrapper does neither.
		spec := execSpec{Ignore: o.Ignore, Block: o.Block}
		if o.ExactEnv != nil {
			spec.Env = append([]string{RoleVar + "=backend", runVar + "=" + tag}, o.ExactEnv...)
			o.Direct = true
		}
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "exec.json")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		argv = append([]string{HelperBin}, argv...)
		env = append(env, execVar+"="+f)
	}
	var cmd *exec.Cmd
	if o.Direct {
		cmd = exec.Command(argv[0], argv[1:]...)
	} else {
		script := `exec "$@"`
		if o.Setup != "" {
			script = "set -e; " + o.Setup + "\n" + script
		}
		if !o.NoNet {
			// A new network namespace starts with lo down: bind works but
			// connect fails until it is up.
			script = "ip link set lo up || exit 90; " + script
		}
		cmd = exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, argv...)...)
	}
	cmd.Env = env
	attr := &syscall.SysProcAttr{}
	if o.PID1 {
		attr.Cloneflags |= unix.CLONE_NEWPID
	}
	if !o.NoNet {
		attr.Cloneflags |= unix.CLONE_NEWNET
	}
	cmd.SysProcAttr = attr
	r := &Instance{T: t, Cmd: cmd, Tag: tag, Stdout: newLines(), Stderr: newLines(), Done: make(chan struct{}), Gone: make(chan struct{})}
	var stdout, stderr io.ReadCloser
	var slave *os.File
	if o.Terminal {
		r.TTY, slave = openPTY(t)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		attr.Setsid, attr.Setctty, attr.Ctty = true, true, 0
		stdout, stderr = r.TTY, io.NopCloser(strings.NewReader(""))
		// The terminal ends lines with "\r\n" and echoes a Ctrl-C as "^C"
		// in front of the next line.
		r.Stdout.clean = func(s string) string { return strings.TrimPrefix(strings.TrimSuffix(s, "\r"), "^C") }
	} else {
		var err error
		if stdout, err = cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
		if stderr, err = cmd.StderrPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start shim in new namespaces (flags %#x): %v (needs root or CAP_SYS_ADMIN; the kernel refused)", attr.Cloneflags, err)
	}
	if slave != nil {
		slave.Close() // the master reads EOF (EIO) once the shim's side is gone
	}
	r.PID = cmd.Process.Pid
	var feeders sync.WaitGroup
	feeders.Add(2)
	go func() { defer feeders.Done(); r.Stdout.feed(stdout) }()
	if o.HoldStderr {
		r.gate = make(chan struct{})
	}
	r.stderrR, _ = stderr.(*os.File)
	go func() {
		defer feeders.Done()
		if r.gate != nil {
			<-r.gate
		}
		r.Stderr.feed(stderr)
	}()
	go func() {
		// cmd.Wait closes the pipes; let the feeders drain them first.
		ps, _ := cmd.Process.Wait()
		r.ExitedAt = time.Now()
		r.Status = ExitCode(ps)
		close(r.Gone)
		waited := make(chan struct{})
		go func() { feeders.Wait(); close(waited) }()
		// A process that outlives the shim (a test of exactly that) holds the
		// pipes open; do not wait for it forever.
		select {
		case <-waited:
		case <-time.After(2 * time.Second):
		}
		stdout.Close()
		stderr.Close()
		<-waited
		close(r.Done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		r.Release()
		select {
		case <-r.Done:
		case <-time.After(10 * time.Second):
			t.Errorf("shim %d not gone 10s after SIGKILL", r.PID)
		}
		if !o.PID1 { // as PID 1 its death ended the namespace
			KillTagged(tag)
		}
		if t.Failed() {
			t.Logf("shim stderr:\n%s", tail(r.Stderr.String(), 80))
			t.Logf("backend stdout:\n%s", tail(r.Stdout.String(), 80))
		}
	})
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// KillTagged SIGKILLs every process of the run tagged tag: what a failed
// subreaper-mode test may leave behind.
func KillTagged(tag string) {
	for _, pid := range Tagged(tag) {
		unix.Kill(pid, unix.SIGKILL)
	}
}

// Tagged lists the live processes whose environment carries the run tag
// tag. Only processes that run started carry it.
func Tagged(tag string) []int {
	want := []byte(runVar + "=" + tag + "\x00")
	pids, _ := proc.PIDs()
	var out []int
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if st, err := proc.ReadStat(pid); err == nil && !st.Zombie() {
			out = append(out, pid)
		}
	}
	return out
}

// ExitCode is a process's exit code; a death by signal S is -S (the shim
// itself dying of a signal is never expected), no state at all -1000.
func ExitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1000
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal())
	}
	return ps.ExitCode()
}

// Line waits up to 30 s for a stdout line starting with prefix.
func (r *Instance) Line(prefix string) string {
	r.T.Helper()
	return r.LineWithin(prefix, 30*time.Second)
}

// LineWithin waits up to d for a stdout line starting with prefix.
func (r *Instance) LineWithin(prefix string, d time.Duration) string {
	r.T.Helper()
	s, ok := r.Stdout.WaitFor(d, func(l string) bool { return strings.HasPrefix(l, prefix) })
	if !ok {
		r.T.Fatalf("no stdout line starting %q within %v (shim exited: %v)", prefix, d, r.Exited())
	}
	return s
}

// LogLine waits up to d for a stderr line containing substr.
func (r *Instance) LogLine(substr string, d time.Duration) string {
	r.T.Helper()
	s, ok := r.Stderr.WaitFor(d, func(l string) bool { return strings.Contains(l, substr) })
	if !ok {
		r.T.Fatalf("no stderr line containing %q within %v (shim exited: %v)", substr, d, r.Exited())
	}
	return s
}

// WaitLogCount waits up to d until stderr has n lines containing substr.
func (r *Instance) WaitLogCount(substr string, n int, d time.Duration) {
	r.T.Helper()
	got := 0
	_, ok := r.Stderr.WaitFor(d, func(l string) bool {
		if strings.Contains(l, substr) {
			got++
		}
		return got >= n
	})
	if !ok {
		r.T.Fatalf("stderr has %d of %d lines containing %q after %v (shim exited: %v)", got, n, substr, d, r.Exited())
	}
}

// Exited reports whether the shim process has exited (its output may still
// be being read).
func (r *Instance) Exited() bool {
	select {
	case <-r.Gone:
		return true
	default:
		return false
	}
}

// Wait waits up to d for the shim to exit and its output to be read, and
// returns its exit code.
func (r *Instance) Wait(d time.Duration) int {
	r.T.Helper()
	select {
	case <-r.Done:
	case <-time.After(d):
		r.T.Fatalf("shim did not exit within %v", d)
	}
	return r.Status
}

// Signal sends sig through the shim's pidfd (Go's os.Process), so a reused
// pid can never receive it.
func (r *Instance) Signal(sig syscall.Signal) error {
	return r.Cmd.Process.Signal(sig)
}

// CountLines counts the stdout lines equal to s.
func (r *Instance) CountLines(s string) int {
	return r.Stdout.Count(func(l string) bool { return l == s })
}

// Release starts reading a held stderr.
func (r *Instance) Release() {
	if r.gate != nil {
		select {
		case <-r.gate:
		default:
			close(r.gate)
		}
	}
}

// StderrFull reports whether the held stderr pipe is full (what a stalled
// log consumer leaves): within a page of its size, since the kernel fills
// it page by page.
func (r *Instance) StderrFull() bool {
	fd := int(r.stderrR.Fd())
	size, err1 := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	n, err2 := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	return err1 == nil && err2 == nil && n > size-4096
}

// Lines collects the lines of a stream and wakes waiters on each one.
type Lines struct {
	mu      sync.Mutex
	lines   []string
	raw     bytes.Buffer
	changed chan struct{}
	closed  bool
	clean   func(string) string // if set, applied to each line read
}

func newLines() *Lines { return &Lines{changed: make(chan struct{})} }

// feed reads r to its end, line by line.
func (l *Lines) feed(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s := sc.Text()
		if l.clean != nil {
			s = l.clean(s)
		}
		l.Add(s)
	}
	io.Copy(io.Discard, r)
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Add appends a line and wakes the waiters.
func (l *Lines) Add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.raw.WriteString(s + "\n")
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// All returns the lines so far.
func (l *Lines) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// WaitFor waits until pred holds for a line (pred sees each line once, in
// order) or timeout passes or the stream ends; it reports success.
func (l *Lines) WaitFor(timeout time.Duration, pred func(line string) bool) (string, bool) {
	deadline := time.After(timeout)
	i := 0
	for {
		l.mu.Lock()
		for ; i < len(l.lines); i++ {
			if pred(l.lines[i]) {
				s := l.lines[i]
				l.mu.Unlock()
				return s, true
			}
		}
		ch, closed := l.changed, l.closed
		l.mu.Unlock()
		if closed {
			return "", false
		}
		select {
		case <-ch:
		case <-deadline:
			return "", false
		}
	}
}

// Count counts the lines for which pred holds.
func (l *Lines) Count(pred func(string) bool) int {
	n := 0
	for _, s := range l.All() {
		if pred(s) {
			n++
		}
	}
	return n
}

// openPTY returns a new pseudo-terminal's master and its slave, opened.
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
	return m, s
}

// execWith sets up the process state the execSpec in file path describes
// and execs os.Args[1:]: signals ignored and blocked as a parent such as
// nohup leaves them, an environment exactly as listed.
func execWith(path string) {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "pid1test exec wrapper: %v\n", err)
		os.Exit(95)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	var spec execSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fail(fmt.Errorf("parse %s: %w", path, err))
	}
	runtime.LockOSThread() // the mask is per thread; execve keeps this one's
	var block unix.Sigset_t
	for _, sig := range spec.Block {
		block.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, nil); err != nil {
		fail(fmt.Errorf("block signals: %w", err))
	}
	for _, sig := range spec.Ignore {
		if err := sigdisp.Set(sig, sigdisp.Ignore); err != nil {
			fail(err)
		}
	}
	env := spec.Env
	if env == nil {
		os.Unsetenv(execVar)
		env = os.Environ()
	}
	err = unix.Exec(os.Args[1], os.Args[1:], env)
	fail(fmt.Errorf("exec %s: %w", os.Args[1], err))
}

// Package reliability drives the real convex-shim binary, built from
// ./cmd/convex-shim, under load, faults and hostile conditions, each run in a
// fresh PID and/or network namespace as cmd/convex-shim's tests do: issue 6.
// docs/reliability.md lists every case with the figure it produced and the
// command that reproduces it.
//
// The test binary doubles as every program the shim supervises (the os/exec
// helper-process pattern, see helper_test.go): with REL_HELPER set, TestMain
// runs that role instead of the tests. Helpers print one line per event on
// stdout; the tests wait on those lines (and on conditions polled with a
// deadline), never on fixed sleeps.
//
// Client traffic comes from this process: a goroutine locks its OS thread and
// setns(2)es it into the shim's network namespace, so sockets it creates live
// there (nsRun). Nothing is sent anywhere but loopback and the private
// namespaces the tests create.
//
// The long runs (1,000,000 connections, 10 GB, 1,000-run loops where they are
// slow) are scaled down unless RELIABILITY_SOAK=1 (make soak). Root is
// needed (namespaces, setpriv, raising RLIMIT_NOFILE); where the kernel
// refuses, the tests fail with its reason.
package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	shimBin   string // the real binary, built from ./cmd/convex-shim
	helperBin string // a copy of this test binary that uid 1000 can execute
	binDir    string
	soak      = os.Getenv("RELIABILITY_SOAK") == "1"
)

// scale picks the soak figure or the make-test figure.
func scale[T any](normal, soakValue T) T {
	if soak {
		return soakValue
	}
	return normal
}

// wantNofile is the RLIMIT_NOFILE the tests ask for, for themselves and the
// shims they start: 10,000 forwarded connections cost the shim 20,000
// descriptors (see TestHeld10000Connections).
const wantNofile = 1 << 20

func TestMain(m *testing.M) {
	if env := os.Getenv("REL_EXEC_ENV"); env != "" {
		execWithEnv(env)
	}
	if role := os.Getenv("REL_HELPER"); role != "" {
		helperMain(role)
		os.Exit(0)
	}
	raiseNofile()
	dir, err := os.MkdirTemp("", "convex-shim-reliability-")
	if err == nil {
		err = os.Chmod(dir, 0o755) // uid 1000 runs the binaries in TestNonRoot
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	shimBin = filepath.Join(dir, "convex-shim")
	if bin := os.Getenv("RELIABILITY_SHIM"); bin != "" {
		// Another build, such as an older commit's, to see a test catch a bug.
		if err := copyFile(bin, shimBin, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	} else {
		build := exec.Command("go", "build", "-o", shimBin, "github.com/convex-shim/convex-shim/cmd/convex-shim")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build convex-shim: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	helperBin = filepath.Join(dir, "helper")
	if err := copyFile(os.Args[0], helperBin, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// opts says how to start one shim.
type opts struct {
	pid1    bool     // PID 1 of a new PID namespace; otherwise a child subreaper
	noNet   bool     // no new network namespace (only for runs with --forward off)
	setup   string   // shell run inside the namespaces before exec (after lo is up)
	wrap    []string // exec'd in front of the shim (setpriv ..., prlimit ...)
	env     []string // added to the shim's (and so the backend's) environment
	args    []string // shim flags
	program []string // default: this binary as the "backend" helper
	direct  bool     // no /bin/sh in front: the shim is exec'd directly (implies no setup)
	// exactEnv, if set, is the shim's whole environment, byte for byte
	// (duplicates and all), plus REL_HELPER=backend and REL_RUN; implies direct.
	exactEnv []string
	// holdStderr leaves the shim's stderr pipe unread until release(): a
	// log consumer that has stalled.
	holdStderr bool
}

// shimRun is one running shim, its stdout (the backend's) and stderr (its
// own log, and the backend's) split into lines.
type shimRun struct {
	t        *testing.T
	cmd      *exec.Cmd
	pid      int // host pid of the shim
	tag      string
	stdout   *lineLog
	stderr   *lineLog
	done     chan struct{}
	status   int
	exitedAt time.Time
	gate     chan struct{} // closed by release when holdStderr
	gone     chan struct{} // closed when the shim has exited (done: and its output is read)
	stderrR  *os.File      // the read end of its stderr pipe
}

// lineLog collects lines and wakes waiters on each one.
type lineLog struct {
	mu      sync.Mutex
	lines   []string
	raw     bytes.Buffer
	changed chan struct{}
	closed  bool
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) feed(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, sc.Text())
		l.raw.WriteString(sc.Text() + "\n")
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	io.Copy(io.Discard, r)
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// waitFor waits until pred holds for the lines from index from onwards
// (pred sees only new lines each time) or timeout; it reports success.
func (l *lineLog) waitFor(timeout time.Duration, pred func(line string) bool) (string, bool) {
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

func (l *lineLog) count(pred func(string) bool) int {
	n := 0
	for _, s := range l.all() {
		if pred(s) {
			n++
		}
	}
	return n
}

var runSeq struct {
	sync.Mutex
	n int
}

func start(t *testing.T, o opts) *shimRun {
	t.Helper()
	program := o.program
	if program == nil {
		program = []string{helperBin}
	}
	runSeq.Lock()
	runSeq.n++
	tag := fmt.Sprintf("%d-%d", os.Getpid(), runSeq.n)
	runSeq.Unlock()

	argv := append(append(append(append([]string{}, o.wrap...), shimBin), o.args...), "--")
	argv = append(argv, program...)
	if o.exactEnv != nil {
		// os/exec and shells tidy an environment; execWithEnv does not.
		f := filepath.Join(t.TempDir(), "env")
		env := append([]string{"REL_HELPER=backend", "REL_RUN=" + tag}, o.exactEnv...)
		if err := os.WriteFile(f, []byte(strings.Join(env, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
		argv = append([]string{helperBin}, argv...)
		o.direct = true
		o.env = append(o.env, "REL_EXEC_ENV="+f)
	}
	var cmd *exec.Cmd
	if o.direct {
		cmd = exec.Command(argv[0], argv[1:]...)
	} else {
		script := `exec "$@"`
		if o.setup != "" {
			script = "set -e; " + o.setup + "\n" + script
		}
		if !o.noNet {
			// A new network namespace starts with lo down.
			script = "ip link set lo up || exit 90; " + script
		}
		cmd = exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, argv...)...)
	}
	cmd.Env = append(append(os.Environ(), "REL_HELPER=backend", "REL_RUN="+tag), o.env...)
	var flags uintptr
	if o.pid1 {
		flags |= unix.CLONE_NEWPID
	}
	if !o.noNet {
		flags |= unix.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	r := &shimRun{t: t, cmd: cmd, tag: tag, stdout: newLineLog(), stderr: newLineLog(), done: make(chan struct{}), gone: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start shim in new namespaces (flags %#x): %v (needs root or CAP_SYS_ADMIN; the kernel refused)", flags, err)
	}
	r.pid = cmd.Process.Pid
	var feeders sync.WaitGroup
	feeders.Add(2)
	go func() { defer feeders.Done(); r.stdout.feed(stdout) }()
	if o.holdStderr {
		r.gate = make(chan struct{})
	}
	r.stderrR, _ = stderr.(*os.File)
	go func() {
		defer feeders.Done()
		if r.gate != nil {
			<-r.gate
		}
		r.stderr.feed(stderr)
	}()
	go func() {
		// cmd.Wait closes the pipes; let the feeders drain them first.
		ps, _ := cmd.Process.Wait()
		r.exitedAt = time.Now()
		r.status = exitCodeOf(ps)
		close(r.gone)
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
		close(r.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		r.release()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("shim %d not gone 10s after SIGKILL", r.pid)
		}
		if !o.pid1 { // as PID 1 its death ended the namespace
			killTagged(tag)
		}
		if t.Failed() {
			t.Logf("shim stderr:\n%s", tail(r.stderr.String(), 80))
			t.Logf("backend stdout:\n%s", tail(r.stdout.String(), 80))
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

// killTagged SIGKILLs every process whose environment carries REL_RUN=tag:
// what a failed subreaper-mode test may leave behind. Only processes this
// test started carry the tag.
func killTagged(tag string) {
	for _, pid := range tagged(tag) {
		unix.Kill(pid, unix.SIGKILL)
	}
}

func tagged(tag string) []int {
	want := []byte("REL_RUN=" + tag + "\x00")
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(b, want) && procState(pid) != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

func exitCodeOf(ps *os.ProcessState) int {
	if ps == nil {
		return -1000
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal()) // the shim itself died of a signal
	}
	return ps.ExitCode()
}

// line waits for a stdout line starting with prefix.
func (r *shimRun) line(prefix string) string {
	r.t.Helper()
	return r.lineWithin(prefix, 30*time.Second)
}

func (r *shimRun) lineWithin(prefix string, d time.Duration) string {
	r.t.Helper()
	s, ok := r.stdout.waitFor(d, func(l string) bool { return strings.HasPrefix(l, prefix) })
	if !ok {
		r.t.Fatalf("no stdout line starting %q within %v (shim exited: %v)", prefix, d, r.exited())
	}
	return s
}

// logLine waits for a stderr line containing substr.
func (r *shimRun) logLine(substr string, d time.Duration) string {
	r.t.Helper()
	s, ok := r.stderr.waitFor(d, func(l string) bool { return strings.Contains(l, substr) })
	if !ok {
		r.t.Fatalf("no stderr line containing %q within %v (shim exited: %v)", substr, d, r.exited())
	}
	return s
}

// waitLogCount waits until stderr has n lines containing substr.
func (r *shimRun) waitLogCount(substr string, n int, d time.Duration) {
	r.t.Helper()
	got := 0
	_, ok := r.stderr.waitFor(d, func(l string) bool {
		if strings.Contains(l, substr) {
			got++
		}
		return got >= n
	})
	if !ok {
		r.t.Fatalf("stderr has %d of %d lines containing %q after %v", got, n, substr, d)
	}
}

// exited reports whether the shim process has exited (its output may still
// be being read).
func (r *shimRun) exited() bool {
	select {
	case <-r.gone:
		return true
	default:
		return false
	}
}

// wait waits for the shim to exit and returns its exit code.
func (r *shimRun) wait(d time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		r.t.Fatalf("shim did not exit within %v", d)
	}
	return r.status
}

// signal sends sig through the shim's pidfd (Go's os.Process), so a reused
// pid can never receive it.
func (r *shimRun) signal(sig syscall.Signal) error {
	return r.cmd.Process.Signal(sig)
}

// hasLine reports whether stdout has a line equal to s.
func (r *shimRun) countLines(s string) int {
	return r.stdout.count(func(l string) bool { return l == s })
}

// eventually polls cond every interval until it holds or timeout passes.
func eventually(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// nsRun runs f(i) for i in [0, n) on n goroutines, each locked to an OS
// thread that has entered the network namespace of pid; sockets f creates
// live there. The threads are never unlocked, so the runtime discards them.
// It returns the first error.
func nsRun(pid, n int, f func(i int) error) error {
	return nsPathRun(fmt.Sprintf("/proc/%d/ns/net", pid), n, f)
}

func nsPathRun(path string, n int, f func(i int) error) error {
	errs := make(chan error, n)
	for i := range n {
		go func() {
			runtime.LockOSThread()
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- fmt.Errorf("open %s: %w", path, err)
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				errs <- fmt.Errorf("setns %s: %w (needs CAP_SYS_ADMIN)", path, err)
				return
			}
			errs <- f(i)
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// --- /proc readers -------------------------------------------------------

// fdKinds counts pid's open descriptors by kind: socket, pipe, anon_inode
// names, or "file".
func fdKinds(pid int) (map[string]int, int) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, -1
	}
	m := map[string]int{}
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		k := "file"
		switch {
		case strings.HasPrefix(l, "socket:"):
			k = "socket"
		case strings.HasPrefix(l, "pipe:"):
			k = "pipe"
		case strings.HasPrefix(l, "anon_inode:"):
			k = strings.TrimPrefix(l, "anon_inode:")
		}
		m[k]++
	}
	return m, len(ents)
}

func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// lowestFreeFd is the descriptor number the process's next open would get.
// RLIMIT_NOFILE bounds that number, not the count: with a hole below the
// highest descriptor, a limit equal to the count still leaves one free.
func lowestFreeFd(pid int) int {
	names, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	used := map[int]bool{}
	for _, e := range names {
		n, _ := strconv.Atoi(e.Name())
		used[n] = true
	}
	n := 0
	for used[n] {
		n++
	}
	return n
}

// statusField returns a field of /proc/pid/status ("Threads", "VmRSS").
func statusField(pid int, name string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func threads(pid int) int {
	n, _ := strconv.Atoi(statusField(pid, "Threads"))
	return n
}

// rssKB is VmRSS in KiB.
func rssKB(pid int) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(statusField(pid, "VmRSS"), " kB"))
	return n
}

// statFields returns the fields of /proc/pid/stat after the command name:
// [0] state, [1] ppid, [2] pgrp, [3] session, ... [19] starttime.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func procState(pid int) string {
	if f := statFields(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

func ppidOf(pid int) int {
	if f := statFields(pid); len(f) > 1 {
		n, _ := strconv.Atoi(f[1])
		return n
	}
	return -1
}

// startTime identifies a process across pid reuse.
func startTime(pid int) string {
	if f := statFields(pid); len(f) > 19 {
		return f[19]
	}
	return ""
}

// alive reports whether the process pid that started at start still exists
// and is not a zombie.
func alive(pid int, start string) bool {
	f := statFields(pid)
	return len(f) > 19 && f[19] == start && f[0] != "Z"
}

// childrenOf lists pids whose parent is ppid, with their states.
func childrenOf(ppid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out[pid] = f[0]
		}
	}
	return out
}

func zombiesOf(ppid int) int {
	n := 0
	for _, st := range childrenOf(ppid) {
		if st == "Z" {
			n++
		}
	}
	return n
}

// hostPID maps a pid seen inside the PID namespace of nsInit (a host pid)
// to the host pid, through NSpid in /proc/*/status.
func hostPID(nsInit, nsPid int) int {
	nsLink, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", nsInit))
	if err != nil {
		return -1
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); l != nsLink {
			continue
		}
		f := strings.Fields(statusField(pid, "NSpid"))
		if len(f) > 0 && f[len(f)-1] == strconv.Itoa(nsPid) {
			return pid
		}
	}
	return -1
}

// nofileLimit is the RLIMIT_NOFILE this process and every shim it starts
// run with; nofileErr is the kernel's answer when it could not be raised to
// wantNofile (a container without CAP_SYS_RESOURCE keeps its hard limit).
var (
	nofileLimit uint64
	nofileErr   error
)

func raiseNofile() {
	// syscall.Setrlimit (not x/sys/unix) also tells os/exec not to restore
	// the old soft limit in children.
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: wantNofile, Max: wantNofile})
	if err != nil {
		nofileErr = fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w (raising the hard limit needs CAP_SYS_RESOURCE)", wantNofile, err)
		var rl syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	nofileLimit = rl.Cur
}

// release starts reading a held stderr.
func (r *shimRun) release() {
	if r.gate != nil {
		select {
		case <-r.gate:
		default:
			close(r.gate)
		}
	}
}

// stderrFull reports whether the held stderr pipe is full (what a stalled
// log consumer leaves): within a page of its size, since the kernel fills
// it page by page.
func (r *shimRun) stderrFull() bool {
	fd := int(r.stderrR.Fd())
	size, err1 := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	n, err2 := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	return err1 == nil && err2 == nil && n > size-4096
}

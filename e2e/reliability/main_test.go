// Package reliability drives the real convex-shim binary, built from
// ./cmd/convex-shim, under load, faults and hostile conditions, each run in a
// fresh PID and/or network namespace by internal/pid1test, as e2e/pid1 does.
// docs/reliability.md lists every case with the figure it produced and the
// command that reproduces it.
//
// The test binary doubles as every program the shim supervises (the os/exec
// helper-process pattern, see helper_test.go): in a helper role, TestMain
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
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"github.com/convex-shim/convex-shim/internal/proc"
	"golang.org/x/sys/unix"
)

var soak = os.Getenv("RELIABILITY_SOAK") == "1"

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
	pid1test.Dispatch(helperMain)
	raiseNofile()
	// RELIABILITY_SHIM: another build, such as an older commit's, to see a
	// test catch a bug.
	os.Exit(pid1test.Run(m, os.Getenv("RELIABILITY_SHIM")))
}

type opts = pid1test.Options

func start(t *testing.T, o opts) *pid1test.Instance { return pid1test.Start(t, o) }

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
	fds, err := proc.FDs(pid)
	if err != nil {
		return nil, -1
	}
	m := map[string]int{}
	for _, fd := range fds {
		l := fd.Target
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
	return m, len(fds)
}

func fdCount(pid int) int {
	_, n := fdKinds(pid)
	return n
}

// lowestFreeFd is the descriptor number the process's next open would get.
// RLIMIT_NOFILE bounds that number, not the count: with a hole below the
// highest descriptor, a limit equal to the count still leaves one free.
func lowestFreeFd(pid int) int {
	fds, err := proc.FDs(pid)
	if err != nil {
		return -1
	}
	used := map[int]bool{}
	for _, fd := range fds {
		used[fd.Num] = true
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

// procState is the state letter of /proc/PID/stat, "" if it is gone.
func procState(pid int) string {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return ""
	}
	return string(st.State)
}

func ppidOf(pid int) int {
	if st, err := proc.ReadStat(pid); err == nil {
		return st.PPID
	}
	return -1
}

// startTime identifies a process across pid reuse.
func startTime(pid int) uint64 {
	st, _ := proc.ReadStat(pid)
	return st.StartTime
}

// alive reports whether the process pid that started at start still exists
// and is not a zombie.
func alive(pid int, start uint64) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.StartTime == start && !st.Zombie()
}

// childrenOf lists pids whose parent is ppid, with their states.
func childrenOf(ppid int) map[int]string {
	out := map[int]string{}
	for _, c := range proc.Children(ppid) {
		out[c.PID] = string(c.State)
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

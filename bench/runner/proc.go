package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	procfs "github.com/convex-shim/convex-shim/internal/proc"
)

// clockTick is USER_HZ, the unit of utime and friends in /proc/PID/stat.
const clockTick = procfs.ClockTick

// readStat is /proc/PID/stat, read by the module's one parser.
func readStat(pid int) (procfs.Stat, error) { return procfs.ReadStat(pid) }

// children lists the pids whose parent is ppid.
func children(ppid int) []int {
	var out []int
	for _, st := range procfs.Children(ppid) {
		out = append(out, st.PID)
	}
	return out
}

// cpuTicks is the CPU time of pid itself (all its threads); with tree, also
// of its reaped children (cutime, cstime) and of its live children. The
// caller makes sure no child exits between the two readings it compares.
func cpuTicks(pid int, tree bool) (int64, error) {
	var kids []int
	if tree {
		kids = children(pid)
	}
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	t := st.UTime + st.STime
	if !tree {
		return t, nil
	}
	t += st.CUTime + st.CSTime
	for _, k := range kids {
		if c, err := readStat(k); err == nil {
			t += c.UTime + c.STime + c.CUTime + c.CSTime
		}
	}
	return t, nil
}

// mem is resident memory in bytes: RSS, and PSS (shared pages divided
// among the processes sharing them).
type mem struct{ rss, pss int64 }

func memOf(pid int) (mem, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return mem{}, err
	}
	defer f.Close()
	var m mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "Rss":
			m.rss = n << 10
		case "Pss":
			m.pss = n << 10
		}
	}
	return m, sc.Err()
}

// memTree is memOf(pid), plus its children's with tree.
func memTree(pid int, tree bool) (mem, error) {
	m, err := memOf(pid)
	if err != nil || !tree {
		return m, err
	}
	for _, k := range children(pid) {
		if c, err := memOf(k); err == nil {
			m.rss += c.rss
			m.pss += c.pss
		}
	}
	return m, nil
}

// listening reports whether something listens on TCP port (IPv4 or IPv6).
func listening(port int) bool {
	want := fmt.Sprintf(":%04X ", port)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st: 0A is LISTEN.
			if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && f[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// waitFor polls cond every 2 ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ksoftirqd are the kernel threads that take over network receive work
// when it piles up; on loopback that is the bench's own traffic.
var ksoftirqd = func() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.HasPrefix(string(b), "ksoftirqd/") {
			pids = append(pids, pid)
		}
	}
	return pids
}()

// softirqTicks is the CPU time of all ksoftirqd threads.
func softirqTicks() int64 {
	var t int64
	for _, pid := range ksoftirqd {
		if st, err := readStat(pid); err == nil {
			t += st.UTime + st.STime
		}
	}
	return t
}

// Package proc reads what the shim, its tests and the bench need from Linux's
// /proc: the process list, the fields of /proc/PID/stat and a process's
// open descriptors. It is the one reader of those in the module.
//
// The format is proc(5)'s: "pid (comm) state ppid pgrp session ...". The
// command name may contain anything, spaces and ')' included, so the fields
// are counted from the last ')'.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ClockTick is USER_HZ, the unit of UTime, STime, CUTime, CSTime and
// StartTime. Linux fixes it at 100 for user space.
const ClockTick = 100

// Stat is the part of /proc/PID/stat that this module reads.
type Stat struct {
	PID   int
	State byte // 'R', 'S', 'D', 'Z', ...
	PPID  int
	PGRP  int
	// UTime and STime are the process's CPU time (all threads); CUTime and
	// CSTime its waited-for children's. In clock ticks.
	UTime, STime, CUTime, CSTime int64
	// StartTime is when the process started, in clock ticks after boot:
	// with the pid it names one process across pid reuse.
	StartTime uint64
}

// Zombie reports whether the process has exited and awaits its wait.
func (s Stat) Zombie() bool { return s.State == 'Z' }

// ReadStat reads /proc/PID/stat. Its error wraps the one from opening the
// file, so errors.Is finds fs.ErrNotExist (the process is gone) or EMFILE.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	return ParseStat(b)
}

// ParseStat parses the contents of a /proc/PID/stat file.
func ParseStat(b []byte) (Stat, error) {
	lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if lp < 0 || rp < lp {
		return Stat{}, fmt.Errorf("parse stat %.40q: no command name in parentheses", b)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:lp])))
	if err != nil {
		return Stat{}, fmt.Errorf("parse stat %.40q: pid: %w", b, err)
	}
	// f[0] is field 3 of proc(5) (state); field n is f[n-3].
	f := bytes.Fields(b[rp+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("parse stat of pid %d: %d fields after the command name, want at least 20", pid, len(f))
	}
	var bad error
	num := func(n int) int64 {
		v, err := strconv.ParseInt(string(f[n-3]), 10, 64)
		if err != nil && bad == nil {
			bad = fmt.Errorf("parse stat of pid %d: field %d: %w", pid, n, err)
		}
		return v
	}
	s := Stat{
		PID: pid, State: f[0][0], PPID: int(num(4)), PGRP: int(num(5)),
		UTime: num(14), STime: num(15), CUTime: num(16), CSTime: num(17),
		StartTime: uint64(num(22)),
	}
	return s, bad
}

// PIDs lists the processes /proc shows. The directory is closed before it
// returns: a caller short of descriptors can then open each stat file with
// the one the listing used.
func PIDs() ([]int, error) {
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		if pid, err := strconv.Atoi(name); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Children returns the stat of every process whose parent is ppid, zombies
// included. It scans /proc: the kernel's /proc/PID/task/TID/children needs
// CONFIG_PROC_CHILDREN, which not every kernel has.
func Children(ppid int) []Stat {
	pids, _ := PIDs()
	var out []Stat
	for _, pid := range pids {
		if st, err := ReadStat(pid); err == nil && st.PPID == ppid {
			out = append(out, st)
		}
	}
	return out
}

// An FD is one open descriptor of a process and what /proc/PID/fd/N links
// to: "socket:[123]", "pipe:[45]", "anon_inode:[eventpoll]", or a path.
type FD struct {
	Num    int
	Target string
}

// FDs lists the open descriptors of pid, in no particular order. One closed
// while the list is read is left out.
func FDs(pid int) ([]FD, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list descriptors of %d: %w", pid, err)
	}
	fds := make([]FD, 0, len(ents))
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		fds = append(fds, FD{Num: n, Target: target})
	}
	return fds, nil
}

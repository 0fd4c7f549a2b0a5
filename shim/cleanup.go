package shim

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/convex-shim/convex-shim/internal/proc"
	"golang.org/x/sys/unix"
)

// cleanup ends what the backend left: its process group (the Node server)
// and everything adopted by the shim. SIGTERM first, SIGKILL after
// CleanupGrace, until no child is left. Orphans of the processes killed here
// are adopted in turn, so each SIGCHLD triggers another round.
func (l *loop) cleanup() {
	if !l.reap() {
		return
	}
	grace := orDefault(l.CleanupGrace, DefaultCleanupGrace)
	// Each leftover gets each signal once: a program may take a second
	// SIGTERM as "force quit" and lose its graceful path.
	sig, signalled := unix.SIGTERM, map[int]bool{}
	l.signalLeftovers(sig, signalled, true)
	deadline := after(grace)
	for l.reap() {
		select {
		case <-l.chld:
			// Processes whose parent just died were adopted: find them.
			l.signalLeftovers(sig, signalled, false)
		case <-l.sigs:
			// The backend is gone; stop requests have nothing left to do.
		case <-deadline:
			if sig == unix.SIGKILL {
				// Unkillable (stuck in the kernel) or out of our sight: the
				// backend's status matters more than waiting forever.
				logf(l.Log, "leftover processes survived SIGKILL for %v; exiting without them", grace)
				return
			}
			sig, signalled, deadline = unix.SIGKILL, map[int]bool{}, after(grace)
			logf(l.Log, "leftover processes still running %v after the backend exited; sending SIGKILL", grace)
			l.signalLeftovers(sig, signalled, true)
		}
	}
}

// signalLeftovers sends sig, once each, to what is left of the backend's
// process group and to every process the shim has adopted. Where /proc
// cannot show them (it belongs to another PID namespace, or is missing), it
// falls back, on entering a phase only, to the process group, or as PID 1 to
// every process in the namespace.
func (l *loop) signalLeftovers(sig unix.Signal, signalled map[int]bool, entering bool) {
	pids, err := leftovers(os.Getpid(), l.pid)
	if isOutOfFiles(err) && l.spare != nil {
		l.spare.Close()
		l.spare = nil
		pids, err = leftovers(os.Getpid(), l.pid)
	}
	if err != nil {
		if entering {
			logf(l.Debug, "cannot list leftover processes (%v); signalling the group, or as PID 1 everyone", err)
			if os.Getpid() == 1 {
				l.kill(-1, sig) // the group included
			} else {
				l.kill(-l.pid, sig)
			}
		}
		return
	}
	for _, pid := range pids {
		if !signalled[pid] {
			signalled[pid] = true
			logf(l.Debug, "sending %s to leftover pid %d", sigName(sig), pid)
			l.kill(pid, sig)
		}
	}
}

// leftovers lists, from /proc, the live processes whose parent is self or
// whose process group is pgid. The kernel's /proc/PID/task/TID/children is
// not always built in.
func leftovers(self, pgid int) ([]int, error) {
	// /proc/self names us only if this /proc is our PID namespace's; a
	// test's fresh namespace often still sees the host's.
	if me, err := os.Readlink("/proc/self"); err != nil || me != strconv.Itoa(self) {
		return nil, fmt.Errorf("list leftovers: /proc is not this PID namespace's (%v)", err)
	}
	// proc.PIDs closes /proc before the stat files are read: out of
	// descriptors, the spare given up is the only one, and it must serve
	// the directory and then each stat file in turn; with the directory
	// still open, every stat read fails and an adopted daemon goes
	// unsignalled.
	pids, err := proc.PIDs()
	if err != nil {
		return nil, fmt.Errorf("list leftovers: %w", err)
	}
	var out []int
	for _, pid := range pids {
		if pid == self {
			continue
		}
		st, err := proc.ReadStat(pid)
		if isOutOfFiles(err) {
			return nil, fmt.Errorf("list leftovers: %w", err)
		}
		if err != nil {
			continue // gone meanwhile
		}
		if !st.Zombie() && (st.PPID == self || st.PGRP == pgid) {
			out = append(out, pid)
		}
	}
	return out, nil
}

func isOutOfFiles(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

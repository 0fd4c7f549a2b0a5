// Command mininit is the floor make bench holds convex-shim's start
// against: the least a Go init must do before its child runs. It
// subscribes the signals convex-shim subscribes (the same lists, from
// package shim, and SIGCHLD on a channel of its own), forks and execs the
// command after "--", waits for it and exits with its status. Nothing else:
// no forward, no flags, no environment handling, no reaping of orphans.
//
//	mininit -- /bin/true
package main

import (
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/convex-shim/convex-shim/shim"
	"golang.org/x/sys/unix"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		os.Stderr.WriteString("usage: mininit -- COMMAND [ARG...]\n")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 64)
	chld := make(chan os.Signal, 1)
	signal.Notify(sigs, slices.Concat(shim.StopRequests, shim.Forwarded, []os.Signal{unix.SIGPIPE})...)
	signal.Notify(chld, unix.SIGCHLD)
	pid, err := syscall.ForkExec(args[0], args, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Stderr.WriteString("mininit: " + err.Error() + "\n")
		os.Exit(127)
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	if ws.Signaled() {
		os.Exit(128 + int(ws.Signal()))
	}
	os.Exit(ws.ExitStatus())
}

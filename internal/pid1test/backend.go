package pid1test

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Backend is what the helper standing in for convex-local-backend does with
// signals, as the real one does (see the shim package doc): it handles only
// SIGINT, draining and then exiting 0, and a second SIGINT is its forced
// exit.
type Backend struct {
	// OnInt is what a SIGINT does: "ignore", "second-exits" (the second
	// exits 1 at once, Convex's "Forcibly shutting down!"), or by default
	// a drain of Drain and exit 0.
	OnInt string
	Drain time.Duration
	// Exit, if not empty, is an exit code to exit with once ready.
	Exit string
	// Other, if set, is called with every observed signal but SIGINT and
	// SIGTERM.
	Other func(unix.Signal)

	sigs chan os.Signal
}

// Listen starts taking the Observed signals; call it before starting
// anything whose readiness a test waits on.
func (b *Backend) Listen() {
	b.sigs = make(chan os.Signal, 64)
	signal.Notify(b.sigs, Observed...)
}

// Serve prints "ready pid=N pgid=N" and then one "backend got SIGNAME" line
// per signal, acting on each; it does not return.
func (b *Backend) Serve() {
	fmt.Printf("ready pid=%d pgid=%d\n", os.Getpid(), unix.Getpgrp())
	if b.Exit != "" {
		n, _ := strconv.Atoi(b.Exit)
		os.Exit(n)
	}
	ints := 0
	for s := range b.sigs {
		sig := s.(unix.Signal)
		fmt.Println("backend got", unix.SignalName(sig))
		switch sig {
		case unix.SIGTERM:
			os.Exit(128 + int(unix.SIGTERM)) // what the default action would report
		case unix.SIGINT:
			ints++
			switch b.OnInt {
			case "ignore":
			case "second-exits":
				if ints == 2 {
					os.Exit(1)
				}
			default:
				time.Sleep(b.Drain)
				os.Exit(0)
			}
		default:
			if b.Other != nil {
				b.Other(sig)
			}
		}
	}
}

// Package sigdisp reads and sets a signal's disposition (default, ignored,
// or a handler) with the raw rt_sigaction system call, the way a C program
// calls sigaction(2).
//
// The Go runtime owns the handlers it installs and os/signal has no call
// that reads a disposition, nor one that sets one behind the runtime's back
// for a process about to exec or to die by that signal. That is what the
// shim (passing default dispositions to the backend), the stand-in backend
// (dying by a signal it does not handle) and the PID-1 tests (starting the
// shim with signals ignored) need.
//
// The system call takes the kernel's struct sigaction, whose layout differs
// between architectures (sa_restorer exists on some, sa_flags comes first
// on MIPS, the signal set is 128 bits there). Only the architectures whose
// layout this package knows build: see layout_*.go. Elsewhere the build
// fails on purpose, naming the missing layout, rather than passing the
// kernel a struct it misreads.
package sigdisp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Disposition is a signal's sa_handler: Default, Ignore or a handler's
// address.
type Disposition uintptr

const (
	Default Disposition = 0 // SIG_DFL
	Ignore  Disposition = 1 // SIG_IGN
)

// sigsetSize is sizeof(sigset_t) as the kernel counts it (_NSIG / 8), the
// last argument of rt_sigaction: 64 signals on every layout known here.
const sigsetSize = 8

// Get returns sig's disposition.
func Get(sig unix.Signal) (Disposition, error) {
	var old kernelSigaction
	if err := rtSigaction(sig, nil, &old); err != nil {
		return 0, fmt.Errorf("read disposition of %s: %w", name(sig), err)
	}
	return Disposition(old.handler), nil
}

// Set sets sig's disposition to d (Default or Ignore) with no flags and an
// empty mask.
func Set(sig unix.Signal, d Disposition) error {
	act := kernelSigaction{handler: uintptr(d)}
	if err := rtSigaction(sig, &act, nil); err != nil {
		return fmt.Errorf("set disposition of %s: %w", name(sig), err)
	}
	return nil
}

func rtSigaction(sig unix.Signal, act, old *kernelSigaction) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig),
		uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), sigsetSize, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func name(sig unix.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

package shim

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sigaction is the kernel's struct sigaction on amd64 and arm64.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const sigIgn = 1 // SIG_IGN

// resetIgnoredSignals sets every signal the shim inherited as ignored back
// to its default action, so the backend starts with default dispositions.
// Go resets the signals it handles in a forked child, but leaves alone the
// ones it never touches (32 and 33, glibc's internal signals) and an ignored
// one stays ignored across execve: a parent that ignored them would pass
// that on to the backend through us.
func resetIgnoredSignals() {
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig == uintptr(unix.SIGKILL) || sig == uintptr(unix.SIGSTOP) {
			continue
		}
		var old sigaction
		_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, sig, 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
		if errno != 0 || old.handler != sigIgn {
			continue
		}
		dfl := sigaction{}
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
}

package forward

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loop's per-connection and per-burst system calls, made with
// RawSyscall rather than the Syscall that unix.Read and friends use.
//
// Syscall tells the scheduler that the goroutine may block: when a call
// outlasts a sysmon tick (20 µs, which a loopback write waking its reader
// can) and no P is idle, sysmon takes the loop's P away and hands it to
// another thread, and the loop must win one back when the call returns.
// With two loops on two Ps that was a steady stream of hand-offs under
// load: sysmon's thread alone used about a tenth of the forwarder's CPU.
// Every call here is on a non-blocking descriptor, so none holds its thread
// longer than the kernel's own work. Only epoll_wait, which does block,
// goes through Syscall.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func read(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errnoErr(e)
}

// write sends p on socket fd. MSG_NOSIGNAL: a peer that reset makes it
// fail with EPIPE rather than raise SIGPIPE, which the shim would have to
// receive and drop.
func write(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	return int(n), errnoErr(e)
}

// splice moves up to n bytes from rfd to wfd, without blocking.
func splice(rfd, wfd, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(m), errnoErr(e)
}

// accept takes one connection from the listener: non-blocking and
// close-on-exec, without its address (log lines ask getpeername).
func accept(lfd int) (int, error) {
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	return int(fd), errnoErr(e)
}

// connect starts a non-blocking connect(2) to the raw address sa.
func connect(fd int, sa unsafe.Pointer, salen uintptr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
	return errnoErr(e)
}

func closeFd(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

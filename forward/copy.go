package forward

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Copying one direction of a forwarded connection, burst by burst.
//
// TCPConn.ReadFrom splices, but it takes a 1 MiB pipe (two descriptors)
// from Go's pool before it waits for data and keeps it until the stream
// ends: every idle direction held one, six descriptors per connection, for
// the 600 s of a long Node action or the whole life of a keep-alive
// connection. And a pipe is the dearer road for the few hundred bytes of a
// callback's request or response.
//
// copyStream waits for data holding nothing, then moves each burst on the
// road that suits its size: a small one is read into a pooled buffer and
// written out; once a read fills the buffer the stream is bulk, and it is
// spliced through a pooled pipe until a burst is small again. Either way the
// buffer or the pipe goes back to its pool before the next wait.

const (
	// smallBurst is the buffer a small burst is read into. A read that
	// fills it switches the stream to splice.
	smallBurst = 16 << 10
	// pipeSize is the capacity asked of each splice pipe, as Go's own
	// (the default pipe-max-size, so unprivileged processes get it too).
	pipeSize = 1 << 20
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, smallBurst); return &b }}

// A pipe is a splice pipe from pipePool, empty whenever it is in the pool.
type pipe struct{ r, w int }

var pipePool sync.Pool

// pipe2Hook, when set, makes pipes instead of pipe2(2): tests run out of
// descriptors with it while connections are live, hence atomic.
var pipe2Hook atomic.Pointer[func(p []int, flags int) error]

func getPipe() *pipe {
	if p, ok := pipePool.Get().(*pipe); ok {
		return p
	}
	var fds [2]int
	pipe2 := unix.Pipe2
	if h := pipe2Hook.Load(); h != nil {
		pipe2 = *h
	}
	if err := pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil // out of descriptors: the caller copies through a buffer
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize) // a smaller pipe still works
	p := &pipe{r: fds[0], w: fds[1]}
	// The pool drops idle items at garbage collection; their descriptors
	// must go with them.
	runtime.SetFinalizer(p, (*pipe).close)
	return p
}

// discard closes a pipe that may hold data; it must not go back to the pool.
func (p *pipe) discard() {
	// The finalizer would close the same numbers again, by then perhaps
	// reused for something else.
	runtime.SetFinalizer(p, nil)
	p.close()
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// copyStream copies src to dst until src's end of stream (nil) or an error.
func copyStream(dst, src *net.TCPConn) error {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	bulk := false
	for {
		var (
			n    int
			rerr error
			buf  *[]byte
			p    *pipe
		)
		err := srcRaw.Read(func(fd uintptr) bool {
			for {
				if bulk {
					p = getPipe()
				}
				if p != nil {
					var m int64
					m, rerr = unix.Splice(int(fd), nil, p.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					n = int(m)
				} else {
					buf = bufPool.Get().(*[]byte)
					n, rerr = unix.Read(int(fd), *buf)
				}
				if rerr != unix.EINTR && rerr != unix.EAGAIN {
					return true
				}
				// Nothing read: hand back what was taken. On EAGAIN wait
				// for the next burst holding nothing.
				giveBack(p, buf)
				p, buf = nil, nil // not ours any more, whatever happens next
				if rerr == unix.EAGAIN {
					return false
				}
			}
		})
		if err == nil && rerr != nil {
			err = &net.OpError{Op: "read", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: rerr}
		}
		if err != nil || n <= 0 {
			giveBack(p, buf)
			return err // n == 0: end of stream
		}

		if p != nil {
			err = pump(dstRaw, p, n)
			if err != nil {
				p.discard()
				return &net.OpError{Op: "write", Net: "tcp", Source: dst.LocalAddr(), Addr: dst.RemoteAddr(), Err: err}
			}
			pipePool.Put(p)
		} else {
			_, err = dst.Write((*buf)[:n])
			bufPool.Put(buf)
			if err != nil {
				return err
			}
		}
		bulk = n >= smallBurst // a buffer filled, or a burst the size of one
	}
}

// giveBack returns to its pool whichever of a pipe or a buffer a read took.
func giveBack(p *pipe, buf *[]byte) {
	if p != nil {
		pipePool.Put(p)
	} else if buf != nil {
		bufPool.Put(buf)
	}
}

// pump splices n bytes from p into dst's socket, waiting whenever it is full.
func pump(dst syscall.RawConn, p *pipe, n int) error {
	for n > 0 {
		var m int64
		var werr error
		err := dst.Write(func(fd uintptr) bool {
			for {
				m, werr = unix.Splice(p.r, nil, int(fd), nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				switch werr {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				}
				return true
			}
		})
		if err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
		if m == 0 {
			return errors.New("splice wrote nothing")
		}
		n -= int(m)
	}
	return nil
}

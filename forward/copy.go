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

// pair is one forwarded connection's copying state: both directions, their
// errors and the count of directions still copying, in one allocation.
type pair struct {
	p                *Proxy
	client, upstream net.Conn
	up, down         stream // client to upstream, upstream to client
	upErr, downErr   error
	running          atomic.Int32
}

// start copies client to upstream (with state up) and upstream to client
// (with down) in two new goroutines; the second to end calls p.finish.
// up and down are nil for connections other than two *net.TCPConn.
func (c *pair) start(up, down *stream) {
	c.running.Store(2)
	go func() {
		c.upErr = proxyCopy(up, c.upstream, c.client)
		c.end()
	}()
	go func() {
		c.downErr = proxyCopy(down, c.client, c.upstream)
		c.end()
	}()
}

// end is each direction's last step: the second to arrive sees both
// errors (the atomic orders the first one's write before it) and finishes.
func (c *pair) end() {
	if c.running.Add(-1) == 0 {
		c.p.finish(c.client, c.upstream, c.upErr, c.downErr)
	}
}

func newPair(client, upstream *net.TCPConn) (*pair, error) {
	c := &pair{client: client, upstream: upstream}
	cr, err := client.SyscallConn()
	if err != nil {
		return nil, err
	}
	ur, err := upstream.SyscallConn()
	if err != nil {
		return nil, err
	}
	c.up.init(upstream, ur, client, cr)
	c.down.init(client, cr, upstream, ur)
	return c, nil
}

// stream is one direction of a forwarded connection. Its read and write
// callbacks are made once, not per burst: a closure handed to RawConn
// escapes, and with it every variable it captures.
type stream struct {
	dst, src       *net.TCPConn
	dstRaw, srcRaw syscall.RawConn
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool

	bulk bool // the last burst filled the buffer: splice the next one
	// The last read: bytes, error, and the buffer or pipe holding them.
	n    int
	rerr error
	buf  *[]byte
	p    *pipe
	// The splice in progress from p to dst: bytes asked, moved, error.
	want  int
	moved int64
	werr  error
}

func (s *stream) init(dst *net.TCPConn, dstRaw syscall.RawConn, src *net.TCPConn, srcRaw syscall.RawConn) {
	s.dst, s.dstRaw, s.src, s.srcRaw = dst, dstRaw, src, srcRaw
	s.readFn, s.writeFn = s.read, s.spliceOut
}

// read is the callback of srcRaw.Read: one burst into a pooled buffer, or
// into a pooled pipe when the stream is bulk.
func (s *stream) read(fd uintptr) bool {
	for {
		if s.bulk {
			s.p = getPipe()
		}
		if s.p != nil {
			var m int64
			m, s.rerr = unix.Splice(int(fd), nil, s.p.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			s.n = int(m)
		} else {
			s.buf = bufPool.Get().(*[]byte)
			s.n, s.rerr = unix.Read(int(fd), *s.buf)
		}
		if s.rerr != unix.EINTR && s.rerr != unix.EAGAIN {
			return true
		}
		// Nothing read: hand back what was taken. On EAGAIN wait for the
		// next burst holding nothing.
		giveBack(s.p, s.buf)
		s.p, s.buf = nil, nil // not ours any more, whatever happens next
		if s.rerr == unix.EAGAIN {
			return false
		}
	}
}

// copy copies src to dst until src's end of stream (nil) or an error.
func (s *stream) copy() error {
	for {
		s.n, s.rerr, s.buf, s.p = 0, nil, nil, nil
		err := s.srcRaw.Read(s.readFn)
		n, p, buf := s.n, s.p, s.buf
		if err == nil && s.rerr != nil {
			err = &net.OpError{Op: "read", Net: "tcp", Source: s.src.LocalAddr(), Addr: s.src.RemoteAddr(), Err: s.rerr}
		}
		if err != nil || n <= 0 {
			giveBack(p, buf)
			return err // n == 0: end of stream
		}

		if p != nil {
			err = s.pump(n)
			if err != nil {
				p.discard()
				return &net.OpError{Op: "write", Net: "tcp", Source: s.dst.LocalAddr(), Addr: s.dst.RemoteAddr(), Err: err}
			}
			pipePool.Put(p)
		} else {
			_, err = s.dst.Write((*buf)[:n])
			bufPool.Put(buf)
			if err != nil {
				return err
			}
		}
		s.bulk = n >= smallBurst // a buffer filled, or a burst the size of one
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

// pump splices n bytes from s.p into dst's socket, waiting whenever it is
// full.
func (s *stream) pump(n int) error {
	for n > 0 {
		s.want, s.moved, s.werr = n, 0, nil
		if err := s.dstRaw.Write(s.writeFn); err != nil {
			return err
		}
		if s.werr != nil {
			return s.werr
		}
		if s.moved == 0 {
			return errors.New("splice wrote nothing")
		}
		n -= int(s.moved)
	}
	return nil
}

// spliceOut is the callback of dstRaw.Write for pump.
func (s *stream) spliceOut(fd uintptr) bool {
	for {
		s.moved, s.werr = unix.Splice(s.p.r, nil, int(fd), nil, s.want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch s.werr {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		return true
	}
}

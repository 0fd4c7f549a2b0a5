package forward

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Copying one direction of a forwarded connection, burst by burst, on the
// loop that owns it.
//
// A small burst (a callback's request or response) is read into the loop's
// scratch buffer and written straight on: one read and one write, no copy
// kept. Only when the writer cannot take all of it is the rest copied into
// a buffer of the direction's own, and the direction stops reading until
// that buffer is written: the backpressure a slow reader must feel. A read
// that fills the scratch buffer marks the direction bulk, and its next
// bursts are spliced through a pipe and never enter user space, until one
// is small again. Buffers and pipes go back to the loop once empty, so an
// idle connection holds none: TCPConn.ReadFrom, the road before the event loop,
// kept a 1 MiB pipe per direction for a connection's whole life.

const (
	// smallBurst is the scratch buffer's size. A read that fills it
	// switches the direction to splice.
	smallBurst = 16 << 10
	// pipeSize is the capacity asked of each splice pipe, as Go's own
	// (the default pipe-max-size, so unprivileged processes get it too).
	pipeSize = 1 << 20
)

// A dir is one direction of a connection: src's bytes go to dst.
type dir struct {
	src, dst *leg
	buf      *[]byte // pending bytes, buf[off:end], when dst could not take them
	off, end int
	pipe     *pipe
	inPipe   int  // pending bytes in pipe
	bulk     bool // the last burst was large: splice the next one
	eof      bool // src has ended
	shut     bool // dst's write half is shut down
}

func (d *dir) pending() bool { return d.inPipe > 0 || d.off < d.end }

// ended reports that everything src sent has reached dst.
func (d *dir) ended() bool { return d.eof && !d.pending() }

// pump moves whatever both directions of c can move now, then passes on
// each direction's end: its destination's write half is shut down, and
// once both have ended the connection is closed.
func (l *loop) pump(c *conn) {
	for _, d := range [2]*dir{&c.c2u, &c.u2c} {
		if err := l.copy(c, d); err != nil {
			// A reset or a failed write: the stream is broken both ways,
			// so close both at once rather than wait for the other side.
			l.finish(c, err)
			return
		}
	}
	if c.c2u.ended() && c.u2c.ended() {
		l.finish(c, nil) // close(2) sends the last FIN: no shutdown needed
		return
	}
	for _, d := range [2]*dir{&c.c2u, &c.u2c} {
		if d.ended() && !d.shut {
			d.shut = true
			if err := unix.Shutdown(d.dst.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
				l.finish(c, &opError{"shutdown", d.dst, c, err})
				return
			}
		}
	}
}

// copy moves bursts from d.src to d.dst until one of them would block,
// src has ended, or the direction has had its budget for this round.
func (l *loop) copy(c *conn, d *dir) error {
	for range burstBudget {
		if d.pending() {
			if !d.dst.w {
				return nil
			}
			if err := l.flush(c, d); err != nil {
				return err
			}
			if d.pending() {
				continue // a partial write: the next one finds dst full
			}
		}
		if d.eof || !d.src.r {
			return nil
		}
		if err := l.fill(c, d); err != nil {
			return err
		}
	}
	l.requeue(c)
	return nil
}

// fill reads one burst from d.src: spliced into the direction's pipe when
// it is bulk, otherwise read into scratch and written straight on.
func (l *loop) fill(c *conn, d *dir) error {
	spliced := d.bulk && l.takePipe(d)
	var n int
	var err error
	if spliced {
		n, err = splice(d.src.fd, d.pipe.w, pipeSize)
	} else {
		n, err = read(d.src.fd, l.scratch)
	}
	switch {
	case err == unix.EAGAIN:
		d.src.r = false
	case err == unix.EINTR:
	case err != nil:
		return &opError{"read", d.src, c, err}
	case n == 0:
		d.eof = true
	}
	if err != nil || n == 0 {
		if spliced {
			l.dropPipe(d) // nothing read: give it back, unless it still holds a burst
		}
		return nil
	}
	if spliced {
		d.inPipe += n
		d.bulk = n >= smallBurst
		return nil
	}

	d.bulk = n == len(l.scratch)
	// A short read emptied the socket's queue, and anything arriving later
	// raises a new edge: no need for the read that would say EAGAIN. If
	// the peer's FIN had arrived, nothing can follow it: the stream has
	// ended, without the read that would return 0 (as nginx reads
	// EPOLLRDHUP). Not with an error pending: the read must report it.
	if !d.bulk && !d.src.err {
		d.src.r = false
		d.eof = d.src.fin
	}
	m := 0
	if d.dst.w {
		m, err = write(d.dst.fd, l.scratch[:n])
		switch err {
		case nil:
		case unix.EAGAIN, unix.EINTR:
			m = 0
			d.dst.w = err == unix.EINTR
		default:
			return &opError{"write", d.dst, c, err}
		}
	}
	if m < n {
		d.buf = l.takeBuf()
		d.off, d.end = 0, copy(*d.buf, l.scratch[m:n])
	}
	return nil
}

// flush writes the direction's pending bytes, as far as dst takes them.
func (l *loop) flush(c *conn, d *dir) error {
	var n int
	var err error
	if d.inPipe > 0 {
		n, err = splice(d.pipe.r, d.dst.fd, d.inPipe)
	} else {
		n, err = write(d.dst.fd, (*d.buf)[d.off:d.end])
	}
	switch err {
	case nil:
	case unix.EAGAIN:
		d.dst.w = false
		return nil
	case unix.EINTR:
		return nil
	default:
		return &opError{"write", d.dst, c, err}
	}
	if n <= 0 {
		return &opError{"write", d.dst, c, errors.New("wrote nothing")}
	}
	if d.inPipe > 0 {
		d.inPipe -= n
		if d.inPipe == 0 && !d.bulk {
			l.dropPipe(d)
		}
		return nil
	}
	d.off += n
	if d.off == d.end {
		l.dropBuf(d)
	}
	return nil
}

// An opError says which leg of which connection failed, for the debug log.
type opError struct {
	op  string
	g   *leg
	c   *conn
	err error
}

func (e *opError) Error() string {
	side := "client"
	if e.g == &e.c.up {
		side = "upstream"
	}
	return e.op + " " + side + ": " + e.err.Error()
}

func (e *opError) Unwrap() error { return e.err }

func (l *loop) takeBuf() *[]byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	b := make([]byte, smallBurst)
	return &b
}

func (l *loop) dropBuf(d *dir) {
	if len(l.bufs) < maxFreeBufs {
		l.bufs = append(l.bufs, d.buf)
	}
	d.buf, d.off, d.end = nil, 0, 0
}

// A pipe is a splice pipe, empty whenever it is in a loop's free list.
type pipe struct{ r, w int }

// pipe2Hook, when set, makes pipes instead of pipe2(2): tests run out of
// descriptors with it while connections are live, hence atomic.
var pipe2Hook atomic.Pointer[func(p []int, flags int) error]

// takePipe gives d a pipe if it has none; false when none can be made
// (out of descriptors): the burst then goes through scratch.
func (l *loop) takePipe(d *dir) bool {
	if d.pipe != nil {
		return true
	}
	if n := len(l.pipes); n > 0 {
		d.pipe = l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return true
	}
	var fds [2]int
	pipe2 := unix.Pipe2
	if h := pipe2Hook.Load(); h != nil {
		pipe2 = *h
	}
	if err := pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return false
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize) // a smaller pipe still works
	d.pipe = &pipe{r: fds[0], w: fds[1]}
	return true
}

// dropPipe gives d's pipe back to the loop, if it has one and it is empty.
func (l *loop) dropPipe(d *dir) {
	if d.pipe == nil || d.inPipe > 0 {
		return
	}
	if len(l.pipes) < maxFreePipes {
		l.pipes = append(l.pipes, d.pipe)
	} else {
		d.pipe.close()
	}
	d.pipe = nil
}

// releaseDir gives back what a finished connection's direction holds. A
// pipe with bytes still in it is closed: back in the free list, the next
// connection would forward them as its own.
func (l *loop) releaseDir(d *dir) {
	if d.buf != nil {
		l.dropBuf(d)
	}
	if d.pipe != nil {
		if d.inPipe > 0 {
			d.pipe.close()
			d.pipe, d.inPipe = nil, 0
		} else {
			l.dropPipe(d)
		}
	}
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

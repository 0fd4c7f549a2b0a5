package forward

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop is the event loop: an epoll instance over the listening socket,
// its own eventfd (Close and finished lookups wake it) and both legs of
// every connection it accepted. Everything but the inbox is touched by the
// loop's goroutine alone.
//
// The goroutine blocks in epoll_wait itself, as a system call. It was
// first parked in Go's network poller (the epoll descriptor registered
// there, events taken with a zero timeout on wake-up): every new connection
// then cost three trips through the scheduler, Go's own epoll_wait and
// thread wake-ups, and 217 µs of CPU against 150 µs this way (nginx: 143,
// same run, bench/fwdprof at c=1). While it blocks, sysmon hands its P to
// other goroutines only when they need one and no other P is idle; with
// two loops blocking on two Ps that happened every 20 µs (see sys.go),
// which is one reason there is one loop.
//
// Everything in its epoll is edge-triggered, and every event is handled to
// the end: a read or accept until the socket is empty, or the connection
// queued in again with a zero timeout for the next wait.
//
// Descriptors are closed at the end of a round of events, never in the
// middle: a number closed and reused by an accept in the same round would
// receive the events still queued for the old socket.
type loop struct {
	p     *Proxy
	epfd  int
	efd   int // eventfd: Close and finished lookups wake the loop
	lfd   int
	tgt   target
	rsa   unsafe.Pointer // tgt.addr in connect(2)'s form
	rsaN  uintptr
	fam   int
	retry time.Duration // DialRetry with the default applied
	base  time.Time     // the timers' clock starts here (monotonic)

	events  [128]unix.EpollEvent
	conns   []*conn // by descriptor, both legs of each connection
	timers  timerHeap
	again   []*conn // spent their burst budget with work left
	spare   []*conn // again's other half, swapped each round
	closing []int   // closed at the end of the round
	quit    bool
	accepts bool // the listener may have more: accept again before waiting

	scratch []byte    // every small burst is read into it and written out
	bufs    []*[]byte // free buffers for bursts a writer could not take
	pipes   []*pipe   // free splice pipes, all empty

	// Accepting stops for acceptBackoff when accept fails for lack of
	// descriptors or memory, as net/http does, and the listener is taken
	// out of this loop's epoll meanwhile (it would wake the loop at once).
	acceptT       timer
	acceptBackoff time.Duration

	mu      sync.Mutex
	inbox   []lookup // finished host-name lookups
	stopped bool
}

const (
	// burstBudget is how many bursts one direction moves per wake-up
	// before the loop turns to other connections (edge-triggered epoll
	// would not report the rest again, so it is queued in again). A
	// spliced burst is up to pipeSize: four of them take about a
	// millisecond, the most a bulk stream delays a callback.
	burstBudget = 4
	// acceptBudget is how many connections one wake-up accepts.
	acceptBudget = 64
	// Free buffers and pipes kept per loop; more are dropped.
	maxFreeBufs  = 64
	maxFreePipes = 4
)

func newLoop(p *Proxy, lfd int, tgt target, retry time.Duration) (*loop, error) {
	l := &loop{p: p, lfd: lfd, tgt: tgt, retry: retry, base: time.Now(), epfd: -1, efd: -1}
	if tgt.host == "" {
		l.rsa, l.rsaN, l.fam = rawSockaddr(tgt.addr)
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if l.efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.efd, unix.EPOLLIN|unix.EPOLLET); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	if err := l.listenOn(); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl listener: %w", err)
	}
	l.scratch = make([]byte, smallBurst)
	return l, nil
}

// listenOn adds the listener. Adding reports connections already queued.
func (l *loop) listenOn() error {
	return l.ctl(unix.EPOLL_CTL_ADD, l.lfd, unix.EPOLLIN|unix.EPOLLET)
}

func (l *loop) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

// release closes the loop's own descriptors and its free pipes. The
// eventfd is closed under mu, so that a lookup finishing late never writes
// to its number after it was reused.
func (l *loop) release() {
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	if l.epfd >= 0 {
		unix.Close(l.epfd)
		l.epfd = -1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.efd >= 0 {
		unix.Close(l.efd)
		l.efd = -1
	}
}

// stop asks the loop to close everything and return; it does not wait.
func (l *loop) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	l.wakeLocked()
}

// wakeLocked makes the loop's epoll_wait return. l.mu is held.
func (l *loop) wakeLocked() {
	if l.efd < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(l.efd, one[:]) // EAGAIN: the counter is already non-zero
}

func (l *loop) run() {
	defer l.p.wg.Done()
	defer l.release()
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], l.timeout())
		if err != nil && err != unix.EINTR {
			// Only a broken epoll descriptor fails here; nothing the
			// loop serves could make progress any more.
			logf(l.p.Log, "forward: %s: epoll_wait: %v; closing every connection", l.p.Listen, err)
			l.quit = true
		}
		for i := range n {
			l.dispatch(l.events[i])
		}
		if l.quit {
			l.closeAll()
			return
		}
		if l.accepts {
			l.accept()
		}
		l.runAgain()
		l.expire()
		l.flushCloses()
	}
}

// timeout is epoll_wait's in milliseconds: none while work is left over,
// until the next timer otherwise, or forever.
func (l *loop) timeout() int {
	if len(l.again) > 0 || l.accepts {
		return 0
	}
	t := l.timers.top()
	if t == nil {
		return -1
	}
	d := t.when - l.now()
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

func (l *loop) now() time.Duration { return time.Since(l.base) }

func (l *loop) dispatch(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	switch {
	case fd == l.lfd:
		l.accept()
	case fd == l.efd:
		l.woken()
	case fd < len(l.conns) && l.conns[fd] != nil:
		l.event(l.conns[fd], fd, ev.Events)
	}
}

// woken drains the eventfd and takes the inbox.
func (l *loop) woken() {
	var buf [8]byte
	unix.Read(l.efd, buf[:])
	l.mu.Lock()
	inbox := l.inbox
	l.inbox = nil
	l.quit = l.quit || l.stopped
	l.mu.Unlock()
	for _, r := range inbox {
		l.resolved(r)
	}
}

func (l *loop) runAgain() {
	l.again, l.spare = l.spare[:0], l.again
	for _, c := range l.spare {
		c.queued = false
		if c.state == open {
			l.pump(c)
		}
	}
	clear(l.spare)
}

func (l *loop) requeue(c *conn) {
	if !c.queued {
		c.queued = true
		l.again = append(l.again, c)
	}
}

// expire runs the timers that are due.
func (l *loop) expire() {
	if l.timers.top() == nil {
		return
	}
	now := l.now()
	for {
		t := l.timers.top()
		if t == nil || t.when > now {
			return
		}
		l.timers.remove(t)
		if t.c == nil {
			if err := l.listenOn(); err != nil {
				l.acceptFailed(err)
			}
			continue
		}
		l.fire(t.c, now)
	}
}

func (l *loop) flushCloses() {
	for _, fd := range l.closing {
		closeFd(fd)
	}
	l.closing = l.closing[:0]
}

// closeAll ends every connection of a loop that is stopping; nothing is
// logged, as nothing is wrong.
func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c != nil {
			l.finish(c, nil)
		}
	}
	l.flushCloses()
}

// track records fd as a leg of c, growing the table as needed.
func (l *loop) track(fd int, c *conn) {
	if fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*conn, fd+1-len(l.conns)+len(l.conns)/2)...)
	}
	l.conns[fd] = c
}

// untrack forgets fd and closes it at the end of the round.
func (l *loop) untrack(fd int) {
	if fd >= 0 {
		l.conns[fd] = nil
		l.closing = append(l.closing, fd)
	}
}

// accept takes the connections waiting in the listener's queue, up to
// acceptBudget; if that leaves some, l.accepts says so.
func (l *loop) accept() {
	l.accepts = false
	for range acceptBudget {
		fd, err := accept(l.lfd)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.ECONNABORTED, unix.EINTR:
			continue
		default:
			l.acceptFailed(err)
			return
		}
		l.acceptBackoff = 0
		l.open(fd)
	}
	l.accepts = true
}

// acceptFailed backs off: out of descriptors or memory, keep the listener,
// wait and try again, so the backend is reachable once descriptors free up.
func (l *loop) acceptFailed(err error) {
	l.acceptBackoff = min(max(2*l.acceptBackoff, 5*time.Millisecond), time.Second)
	logf(l.p.Log, "forward: accept on %s: %v; retrying in %v", l.p.Listen, err, l.acceptBackoff)
	l.ctl(unix.EPOLL_CTL_DEL, l.lfd, 0)
	l.timers.set(&l.acceptT, l.now()+l.acceptBackoff)
}

// A lookup is a finished host-name lookup for c.
type lookup struct {
	c   *conn
	ips []netip.Addr
	err error
}

// lookUp resolves the target's host name for c off the loop; the answer
// comes back through the inbox.
func (l *loop) lookUp(c *conn) {
	p := l.p
	p.wg.Add(1) // the loop itself is counted, so the count is not zero
	go func() {
		defer p.wg.Done()
		ips, err := net.DefaultResolver.LookupNetIP(p.ctx, "ip", l.tgt.host)
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		l.inbox = append(l.inbox, lookup{c, ips, err})
		l.wakeLocked()
		l.mu.Unlock()
	}()
}

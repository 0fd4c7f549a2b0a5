package forward

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop is one event loop: an epoll instance over the listening socket,
// its own eventfd (wake-ups) and timerfd (dial deadlines and retries), and
// both legs of every connection it accepted. Everything but the inbox is
// touched by the loop's goroutine alone.
//
// The loop never blocks in epoll_wait itself: its epoll descriptor is
// registered with Go's network poller, and the goroutine parks there until
// that descriptor is readable, then takes the events with a zero timeout.
// A goroutine blocked in a system call makes the runtime's sysmon thread
// wake every 20 µs to take its P away and hand it to another thread: with
// two loops blocked in epoll_wait that thread alone used 12% of the
// forwarder's CPU under keep-alive load, and the loops hopped threads.
//
// Descriptors are closed at the end of a round of events, never in the
// middle: a number closed and reused by an accept in the same round would
// receive the events still queued for the old socket.
type loop struct {
	p     *Proxy
	epfd  int
	ep    *os.File        // epfd, in Go's poller
	rc    syscall.RawConn // ep's, to park on
	efd   int             // eventfd: Close and finished lookups wake the loop
	tfd   int             // timerfd: the earliest timer, or earlier
	armed time.Duration   // when tfd fires; 0: disarmed
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
	// would not report the rest again, so it is queued in again).
	burstBudget = 16
	// Free buffers and pipes kept per loop; more are dropped.
	maxFreeBufs  = 64
	maxFreePipes = 4
)

func newLoop(p *Proxy, lfd int, tgt target, retry time.Duration) (*loop, error) {
	l := &loop{p: p, lfd: lfd, tgt: tgt, retry: retry, base: time.Now(), epfd: -1, efd: -1, tfd: -1}
	if tgt.host == "" {
		l.rsa, l.rsaN, l.fam = rawSockaddr(tgt.addr)
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller.
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		unix.Close(l.epfd)
		return nil, fmt.Errorf("epoll non-blocking: %w", err)
	}
	l.ep = os.NewFile(uintptr(l.epfd), "forward-epoll")
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll in Go's poller: %w", err)
	}
	if l.efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.efd, unix.EPOLLIN); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	if l.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		l.release()
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.tfd, unix.EPOLLIN); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl timerfd: %w", err)
	}
	if err := l.listenOn(); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl listener: %w", err)
	}
	l.acceptT.c = nil
	l.scratch = make([]byte, smallBurst)
	return l, nil
}

// listenOn adds the listener: level-triggered, so connections left in the
// queue are reported again, and exclusive, so a new one wakes one loop
// rather than all.
func (l *loop) listenOn() error {
	return l.ctl(unix.EPOLL_CTL_ADD, l.lfd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
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
	if l.ep != nil {
		l.ep.Close() // and with it epfd
	} else if l.epfd >= 0 {
		unix.Close(l.epfd)
	}
	l.ep, l.epfd = nil, -1
	if l.tfd >= 0 {
		unix.Close(l.tfd)
		l.tfd = -1
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
	if err := l.rc.Read(l.serve); err != nil && !l.quit {
		logf(l.p.Log, "forward: %s: waiting for events: %v; closing this loop's connections", l.p.Listen, err)
		l.closeAll()
	}
}

// serve takes and handles events until there are none left, then returns
// false to park in Go's poller; true when the loop is done. It stops only
// on an empty epoll_wait: the listener, eventfd and timerfd are level-
// triggered, and an event left among them might raise no new edge for the
// poller.
func (l *loop) serve(uintptr) bool {
	for {
		n, err := epollReady(l.epfd, l.events[:])
		if err != nil && err != unix.EINTR {
			// Only a broken epoll descriptor fails here; nothing this
			// loop serves could make progress any more.
			logf(l.p.Log, "forward: %s: epoll_wait: %v; closing this loop's connections", l.p.Listen, err)
			l.quit = true
		}
		for i := range n {
			l.dispatch(l.events[i])
		}
		if l.quit {
			l.closeAll()
			return true
		}
		l.runAgain()
		l.flushCloses()
		if n == 0 && err == nil && len(l.again) == 0 {
			return false
		}
	}
}

func (l *loop) now() time.Duration { return time.Since(l.base) }

// setTimer arms t for when. The timerfd is set again only when t is due
// before it fires: dial deadlines all lie DialRetry ahead, so one setting
// serves a stream of connections, and a removed timer is left to fire
// for nothing.
func (l *loop) setTimer(t *timer, when time.Duration) {
	l.timers.set(t, when)
	if l.armed == 0 || when < l.armed {
		l.arm(when)
	}
}

// arm sets the timerfd to fire at when (at once, if it is past).
func (l *loop) arm(when time.Duration) {
	d := max(when-l.now(), time.Nanosecond) // zero would disarm it
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(l.tfd, 0, &spec, nil); err != nil {
		logf(l.p.Log, "forward: %s: timerfd_settime: %v", l.p.Listen, err)
	}
	l.armed = when
}

func (l *loop) dispatch(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	switch {
	case fd == l.lfd:
		l.accept()
	case fd == l.efd:
		l.woken()
	case fd == l.tfd:
		var buf [8]byte
		unix.Read(l.tfd, buf[:])
		l.armed = 0
		l.expire()
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

// expire runs the timers that are due, and arms the timerfd for the next.
func (l *loop) expire() {
	now := l.now()
	for {
		t := l.timers.top()
		if t == nil {
			return
		}
		if t.when > now {
			if l.armed == 0 || t.when < l.armed {
				l.arm(t.when)
			}
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

// accept takes one connection per wake-up: the listener is level-
// triggered, so more waiting ones are reported again, and a connection
// that another loop takes costs this one no empty accept.
func (l *loop) accept() {
	fd, err := accept(l.lfd)
	switch err {
	case nil:
	case unix.EAGAIN, unix.ECONNABORTED, unix.EINTR:
		return
	default:
		l.acceptFailed(err)
		return
	}
	l.acceptBackoff = 0
	l.open(fd)
}

// acceptFailed backs off: out of descriptors or memory, keep the listener,
// wait and try again, so the backend is reachable once descriptors free up.
func (l *loop) acceptFailed(err error) {
	l.acceptBackoff = min(max(2*l.acceptBackoff, 5*time.Millisecond), time.Second)
	logf(l.p.Log, "forward: accept on %s: %v; retrying in %v", l.p.Listen, err, l.acceptBackoff)
	l.ctl(unix.EPOLL_CTL_DEL, l.lfd, 0)
	l.setTimer(&l.acceptT, l.now()+l.acceptBackoff)
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

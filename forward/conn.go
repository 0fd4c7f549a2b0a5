package forward

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A conn is one forwarded connection, from accept to close, owned by the
// loop that accepted it.
type conn struct {
	client, up leg
	c2u, u2c   dir // client to upstream, upstream to client
	state      state
	queued     bool // in the loop's again list

	// Dialing: the give-up time (0: none), the next backoff, the last
	// error, and for a host-name target the addresses left to try.
	t        timer
	deadline time.Duration
	backoff  time.Duration
	lastErr  error
	addrs    []netip.Addr
}

type state uint8

const (
	resolving  state = iota // a lookup of the target's name is running
	connecting              // connect(2) is in progress on up.fd
	waiting                 // the last dial failed; the timer says when to retry
	open                    // both legs are connected: copying
	done                    // closed, or its descriptors closed this round
)

// A leg is one socket of a connection and what epoll last said of it.
// Edge-triggered, so r and w stay true until a read or write finds the
// socket empty or full.
type leg struct {
	fd   int
	r, w bool
	fin  bool // the peer's FIN has arrived (EPOLLRDHUP or EPOLLHUP)
	err  bool // the socket has an error pending (EPOLLERR): a reset
}

// Each connection's events: both legs registered once, for everything.
const legEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// open starts serving a connection just accepted on fd.
func (l *loop) open(fd int) {
	c := &conn{client: leg{fd: fd, w: true}, up: leg{fd: -1}, backoff: 10 * time.Millisecond}
	c.c2u = dir{src: &c.client, dst: &c.up}
	c.u2c = dir{src: &c.up, dst: &c.client}
	c.t.c = c
	l.p.open.Add(1)
	l.track(fd, c)
	if err := l.ctl(unix.EPOLL_CTL_ADD, fd, legEvents); err != nil {
		logf(l.p.Log, "forward: %s: epoll_ctl: %v; closing client %s", l.p.Listen, err, peer(fd))
		l.finish(c, nil)
		return
	}
	if l.retry > 0 {
		c.deadline = l.now() + l.retry
	}
	l.dial(c)
}

// dial starts one connect(2) to the target (or a lookup of its name).
// It never blocks: the result comes as an event on the new socket.
func (l *loop) dial(c *conn) {
	rsa, rsaN, fam := l.rsa, l.rsaN, l.fam
	if l.tgt.host != "" {
		if len(c.addrs) == 0 {
			c.state = resolving
			if c.deadline > 0 {
				l.timers.set(&c.t, c.deadline)
			}
			l.lookUp(c)
			return
		}
		rsa, rsaN, fam = rawSockaddr(netip.AddrPortFrom(c.addrs[0], l.tgt.port))
		c.addrs = c.addrs[1:]
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.dialFailed(c, os.NewSyscallError("socket", err))
		return
	}
	c.up = leg{fd: fd}
	l.track(fd, c)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		l.dropUp(c)
		l.dialFailed(c, os.NewSyscallError("setsockopt", err))
		return
	}
	err = connect(fd, rsa, rsaN)
	if err != nil && err != unix.EINPROGRESS {
		l.dropUp(c)
		l.dialFailed(c, os.NewSyscallError("connect", err))
		return
	}
	// Registered only now: an unconnected socket reports EPOLLHUP.
	if err := l.ctl(unix.EPOLL_CTL_ADD, fd, legEvents); err != nil {
		l.dropUp(c)
		l.dialFailed(c, os.NewSyscallError("epoll_ctl", err))
		return
	}
	c.state = connecting
	if c.deadline > 0 {
		l.timers.set(&c.t, c.deadline)
	}
}

// dropUp closes the upstream socket of a failed dial.
func (l *loop) dropUp(c *conn) {
	l.untrack(c.up.fd)
	c.up = leg{fd: -1}
}

// event applies epoll's report for leg fd of c.
func (l *loop) event(c *conn, fd int, ev uint32) {
	g := &c.client
	if fd == c.up.fd {
		g = &c.up
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		g.r = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		g.w = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		g.fin = true
	}
	if ev&unix.EPOLLERR != 0 {
		g.err = true
	}
	switch {
	case c.state == connecting && g == &c.up:
		l.connected(c, ev)
	case c.state == open:
		l.pump(c)
	}
}

// connected completes a connect(2) that epoll reported on.
func (l *loop) connected(c *conn, ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		errno, err := unix.GetsockoptInt(c.up.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil {
			err = syscall.Errno(errno)
			if errno == 0 {
				err = unix.ECONNRESET // closed as it opened
			}
		}
		l.dropUp(c)
		l.dialFailed(c, os.NewSyscallError("connect", err))
		return
	}
	if ev&unix.EPOLLOUT == 0 {
		return
	}
	l.timers.remove(&c.t)
	c.state = open
	c.lastErr, c.addrs = nil, nil
	if l.p.Debug != nil {
		logf(l.p.Debug, "forward: %s -> %s: client %s connected", l.p.Listen, l.p.Target, peer(c.client.fd))
	}
	l.pump(c)
}

// dialFailed tries the next address of the target's name, or retries with
// backoff until the deadline, or gives up.
func (l *loop) dialFailed(c *conn, err error) {
	c.lastErr = err
	if len(c.addrs) > 0 {
		l.dial(c)
		return
	}
	now := l.now()
	if c.deadline > 0 && now >= c.deadline {
		l.giveUp(c)
		return
	}
	if l.p.Debug != nil {
		logf(l.p.Debug, "forward: dial %s: %v; retrying in %v", l.p.Target, err, c.backoff)
	}
	wake := now + c.backoff
	if c.deadline > 0 {
		wake = min(wake, c.deadline)
	}
	c.state = waiting
	l.timers.set(&c.t, wake)
	c.backoff = min(2*c.backoff, 500*time.Millisecond)
}

// fire runs c's timer: a retry is due, or the dial's deadline has come.
func (l *loop) fire(c *conn, now time.Duration) {
	switch {
	case c.deadline > 0 && now >= c.deadline:
		switch c.state {
		case connecting:
			l.dropUp(c)
			c.lastErr = os.NewSyscallError("connect", unix.ETIMEDOUT)
		case resolving:
			c.lastErr = fmt.Errorf("lookup %s: %w", l.tgt.host, context.DeadlineExceeded)
		}
		l.giveUp(c)
	case c.state == waiting:
		l.dial(c)
	}
}

// resolved continues a dial once the target's name is looked up.
func (l *loop) resolved(r lookup) {
	c := r.c
	if c.state != resolving {
		return // given up meanwhile
	}
	l.timers.remove(&c.t)
	if r.err == nil && len(r.ips) == 0 {
		r.err = fmt.Errorf("lookup %s: no addresses", l.tgt.host)
	}
	if r.err != nil {
		l.dialFailed(c, r.err)
		return
	}
	c.addrs = r.ips
	l.dial(c)
}

// giveUp closes the client of a connection whose upstream could not be
// reached in time.
func (l *loop) giveUp(c *conn) {
	if l.p.Log != nil && !l.quit {
		logf(l.p.Log, "forward: %s -> %s: giving up on client %s: dial %s: %v (gave up after %v)",
			l.p.Listen, l.p.Target, peer(c.client.fd), l.p.Target, c.lastErr, l.retry)
	}
	l.finish(c, nil)
}

// finish closes both legs (at the end of the round) and gives back what
// the connection holds. err, if any, is why, for the debug log.
func (l *loop) finish(c *conn, err error) {
	if c.state == done {
		return
	}
	if err != nil && l.p.Debug != nil {
		logf(l.p.Debug, "forward: %s -> %s: client %s: %v", l.p.Listen, l.p.Target, peer(c.client.fd), err)
	}
	c.state = done
	l.timers.remove(&c.t)
	l.untrack(c.client.fd)
	l.untrack(c.up.fd)
	l.releaseDir(&c.c2u)
	l.releaseDir(&c.u2c)
	l.p.open.Add(-1)
}

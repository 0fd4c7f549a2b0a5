// Package forward is the loopback TCP forwarder that convex-shim runs in-process
// in front of the Convex backend.
//
// Node actions in self-hosted Convex call back to the backend at the address in
// CONVEX_CLOUD_ORIGIN; with the usual http://127.0.0.1 that is 127.0.0.1:80
// inside the container, where nothing listens, and every ctx.runQuery,
// ctx.storage.get and friends fails with ECONNREFUSED. A Proxy listening there
// and forwarding to the backend's port 3210 fixes that without a sidecar.
//
// Typical usage:
//
//	p := &forward.Proxy{Listen: "127.0.0.1:80", Target: "127.0.0.1:3210"}
//	if err := p.Start(); err != nil { // binds now, so no client can race it
//		return err
//	}
//	defer p.Close()
//
// What it guarantees:
//
//   - Start binds synchronously and fails fast; forwarding runs in the
//     background.
//   - A connection accepted while the upstream refuses (the backend is still
//     booting or restarting) is held and the dial retried with backoff for
//     DialRetry. The Node executor retries connect errors for every callback but
//     a reset only for queries and mutations, so "not up yet" must never turn
//     into a reset.
//   - Bytes are copied exactly, both ways at once, with half-close: when one
//     side finishes sending, the other side's write half is shut down and the
//     reverse direction keeps flowing until it finishes too. Bulk goes through
//     splice(2) and never enters user space; small bursts (a callback's
//     request and response) are read and written straight through. An idle
//     connection holds its two sockets, a few hundred bytes of state and
//     nothing else: no goroutine, no buffer, no pipe.
//   - No idle or total timeout: Node actions may run 600 s and V8 actions
//     1800 s, and only the backend knows when a call is over.
//   - Close stops accepting, closes every open connection and waits for the
//     proxy's goroutines, so nothing outlives it.
//
// How: one event loop, a goroutine with its own epoll instance over raw
// non-blocking descriptors, accepts every connection and serves both of its
// directions in the same wake-up, with no hand-off. Go's network poller
// waits on one descriptor per goroutine, so with net.TCPConn a forwarded
// connection needed two goroutines, every burst crossed between them and
// the poller's thread, and held connections cost their goroutines' stacks:
// HAProxy, one event loop per thread, spent about 40% less CPU per
// connection than that design on the same machine (issue 12,
// docs/benchmarks.md). That measured gap is the reason this package does
// its own polling.
//
// One loop, not one per core: on 2 cores it forwards within 5-9% of the
// new connections and keep-alive requests per second of HAProxy and nginx
// with 2 threads each, using less CPU per connection and per request than
// either, and far more than a Convex backend's callbacks need. Two loops
// won back about 5% of rate for 3-7% more CPU per unit, and only with a
// spare P: one blocked epoll_wait leaves the runtime's other P idle, so the
// scheduler never hands the loop's P around (see loop; docs/benchmarks.md,
// "The event loop").
//
// What it deliberately does not do: TLS, HTTP awareness, load balancing, or
// any policy about which addresses may listen (the caller decides that; see
// IsLoopback). It is Linux-only, as convex-shim is.
package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDialRetry is how long an accepted connection waits for the upstream
// when DialRetry is zero. It outlasts a backend restart and is longer than the
// Node executor's first few connect retries, which it replaces.
const DefaultDialRetry = 60 * time.Second

// Proxy forwards every TCP connection accepted on Listen to Target.
type Proxy struct {
	// Listen is the address to listen on, host:port. Required.
	Listen string
	// Target is the upstream address, host:port. Required. A host name is
	// resolved again for every dial, off the event loop.
	Target string
	// DialRetry bounds how long an accepted connection is held while the
	// upstream refuses or cannot be reached. If zero, DefaultDialRetry is used;
	// if negative, there is no bound: the dial is retried until it succeeds or
	// the proxy is closed (the rule for durations in the shim package doc).
	DialRetry time.Duration
	// Log receives operational problems (accept errors, upstream given up on).
	// If nil, they are discarded. A *log.Logger will do.
	Log Logger
	// Debug receives one line per connection. If nil, it is discarded.
	Debug Logger

	mu     sync.Mutex
	closed bool
	addr   net.Addr
	loop   *loop           // nil before Start
	ctx    context.Context // canceled by Close; ends host-name lookups
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and the lookups it started

	// open counts forwarded connections, from accept to close.
	open atomic.Int64
}

// Start listens on p.Listen and serves in the background until Close.
// The listener is bound when Start returns, so a client started afterwards
// can never find the port closed.
func (p *Proxy) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.loop != nil {
		return fmt.Errorf("forward: listen %s: %w", p.Listen, net.ErrClosed)
	}
	tgt, err := parseTarget(p.Target)
	if err != nil {
		return fmt.Errorf("forward: target %s: %w", p.Target, err)
	}
	lfd, addr, err := listenSocket(p.Listen)
	if err != nil {
		return fmt.Errorf("forward: listen %s: %w%s", p.Listen, err, listenHint(err))
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	retry := p.DialRetry
	if retry == 0 {
		retry = DefaultDialRetry
	}
	l, err := newLoop(p, lfd, tgt, retry)
	if err != nil {
		unix.Close(lfd)
		return fmt.Errorf("forward: listen %s: %w", p.Listen, err)
	}
	p.addr, p.loop = addr, l
	p.wg.Add(1)
	go l.run()
	return nil
}

// listenSocket binds addr through net.ListenConfig (address parsing, dual-stack
// rules, SO_REUSEADDR and its error messages are Go's) and keeps a duplicate
// of the socket for the loop; Go's own descriptor is closed.
func listenSocket(addr string) (int, net.Addr, error) {
	// No TCP keep-alive and no Multipath TCP, which Go turns on for
	// listeners since 1.24: neither has anything to do on loopback, and
	// both cost system calls.
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return -1, nil, err
	}
	defer ln.Close()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return -1, nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, nil, err
	}
	if derr != nil {
		return -1, nil, fmt.Errorf("dup listener: %w", derr)
	}
	// Accepted sockets inherit TCP_NODELAY from the listener: one
	// setsockopt at start instead of one per connection. Nagle would hold
	// a callback's burst behind the peer's delayed ACK.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("setsockopt TCP_NODELAY: %w", err)
	}
	return fd, ln.Addr(), nil
}

// listenHint names the usual cause of a bind failure, for the one line an
// operator reads when the container refuses to start.
func listenHint(err error) string {
	switch {
	case errors.Is(err, syscall.EACCES):
		return " (ports below 1024 need CAP_NET_BIND_SERVICE, which root has unless it is dropped, or net.ipv4.ip_unprivileged_port_start at or below the port)"
	case errors.Is(err, syscall.EADDRINUSE):
		return " (another process holds the port: remove an old socat port80-proxy sidecar, or choose another --forward)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return " (no interface has that address)"
	}
	return ""
}

// Addr returns the address the proxy listens on, or nil before Start.
// With Listen "127.0.0.1:0" it tells which port the kernel chose.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Close stops accepting, closes every forwarded connection and waits until
// all of the proxy's goroutines have returned. It is safe to call more than
// once and before Start.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	l := p.loop
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
	if l == nil {
		return nil
	}
	l.stop()
	p.wg.Wait()
	// Only now: the loop, still running, could accept on a reused number.
	return unix.Close(l.lfd)
}

// IsLoopback reports whether the host part of addr (host:port) is a loopback
// IP literal. Hostnames are not resolved: the answer must not depend on DNS.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Logger is what Proxy logs to; *log.Logger is one.
type Logger interface {
	Printf(format string, args ...any)
}

func logf(l Logger, format string, args ...any) {
	if l != nil {
		l.Printf(format, args...)
	}
}

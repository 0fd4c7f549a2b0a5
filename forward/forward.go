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
//   - Start binds synchronously and fails fast; Serve runs in the background.
//   - A connection accepted while the upstream refuses (the backend is still
//     booting or restarting) is held and the dial retried with backoff for
//     DialRetry. The Node executor retries connect errors for every callback but
//     a reset only for queries and mutations, so "not up yet" must never turn
//     into a reset.
//   - Bytes are copied exactly, both ways at once, with half-close: when one
//     side finishes sending, the other side's write half is shut down and the
//     reverse direction keeps flowing until it finishes too. Between two
//     *net.TCPConn, bulk goes through splice(2) and never enters user space;
//     small bursts (a callback's request and response) are copied through a
//     pooled buffer, the cheaper road for a few hundred bytes. An idle
//     connection holds its two sockets and nothing else.
//   - No idle or total timeout: Node actions may run 600 s and V8 actions
//     1800 s, and only the backend knows when a call is over.
//   - Close stops accepting, closes every open connection and waits for their
//     goroutines, so nothing outlives it.
//
// What it deliberately does not do: TLS, HTTP awareness, load balancing, or
// any policy about which addresses may listen (the caller decides that; see
// IsLoopback).
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// DefaultDialRetry is how long an accepted connection waits for the upstream
// when DialRetry is zero. It outlasts a backend restart and is longer than the
// Node executor's first few connect retries, which it replaces.
const DefaultDialRetry = 60 * time.Second

// Proxy forwards every TCP connection accepted on Listen to Target.
type Proxy struct {
	// Listen is the address to listen on, host:port. Required.
	Listen string
	// Target is the upstream address, host:port. Required.
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

	mu sync.Mutex
	ln net.Listener
	// conns maps the client side of every forwarded connection to its
	// upstream side, for Close. A client still waiting for its dial is not
	// in it: canceling ctx ends that dial, and handle closes the client.
	conns  map[net.Conn]net.Conn
	closed bool
	ctx    context.Context // canceled by Close; stops accept backoff and dial retries
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start listens on p.Listen and serves in the background until Close.
// The listener is bound when Start returns, so a client started afterwards
// can never find the port closed.
func (p *Proxy) Start() error {
	// No TCP keep-alive, here or on the dial: both ends are on this host,
	// and Go's default costs setsockopt calls on every connection (17% of
	// the forwarder's CPU per connection in make bench).
	lc := net.ListenConfig{KeepAlive: -1}
	// Nor Multipath TCP, which Go turns on for listeners since 1.24: it has
	// no second path on loopback, and its probe costs two system calls at
	// every start.
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", p.Listen)
	if err != nil {
		return fmt.Errorf("forward: listen %s: %w%s", p.Listen, err, listenHint(err))
	}
	if !p.adopt(ln, true) {
		return fmt.Errorf("forward: listen %s: %w", p.Listen, net.ErrClosed)
	}
	go func() {
		defer p.wg.Done()
		p.serve(ln)
	}()
	return nil
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

// Serve accepts connections on ln and forwards them until ln is closed or
// Close is called. It takes ownership of ln. It returns nil after Close.
func (p *Proxy) Serve(ln net.Listener) error {
	if !p.adopt(ln, false) {
		return nil
	}
	return p.serve(ln)
}

// adopt makes ln the proxy's listener, or closes it if the proxy is closed.
//
// With counted, it also counts the serving goroutine the caller starts in
// p.wg, under the lock Close takes: counted after the lock is released, a
// Close in between would Wait on a zero count and return while it serves.
func (p *Proxy) adopt(ln net.Listener, counted bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ln.Close()
		return false
	}
	p.ln = ln
	p.initLocked()
	if counted {
		p.wg.Add(1)
	}
	return true
}

func (p *Proxy) serve(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("forward: accept on %s: %w", p.Listen, err)
			}
			// Out of descriptors or memory: keep the listener, back off and
			// try again, as net/http does. The backend must stay reachable
			// once descriptors free up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			logf(p.Log, "forward: accept on %s: %v; retrying in %v", p.Listen, err, backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		if !p.admit() {
			c.Close()
			return nil
		}
		go p.handle(c)
	}
}

// Addr returns the address the proxy listens on, or nil before Start.
// With Listen "127.0.0.1:0" it tells which port the kernel chose.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	return p.ln.Addr()
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
	p.initLocked()
	p.cancel()
	var err error
	if p.ln != nil {
		err = p.ln.Close()
	}
	for c, u := range p.conns {
		c.Close()
		u.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) initLocked() {
	if p.conns == nil {
		p.conns = make(map[net.Conn]net.Conn)
	}
	if p.ctx == nil {
		p.ctx, p.cancel = context.WithCancel(context.Background())
	}
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// admit counts a new connection's goroutine in wg, unless the proxy is
// closed. The check and Add share the lock with Close, so Close never waits
// on a count that could still grow (Serve's own loop is not in wg).
func (p *Proxy) admit() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
}

// track adds a forwarded connection to the set Close must close. It fails
// once the proxy is closed, so no connection escapes a concurrent Close.
func (p *Proxy) track(client, upstream net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[client] = upstream
	return true
}

func (p *Proxy) untrack(client net.Conn) {
	p.mu.Lock()
	delete(p.conns, client)
	p.mu.Unlock()
}

// handle forwards one accepted connection. Everything in it runs once per
// connection, so it does only what the guarantees need: one dial, one
// entry in conns, two copying goroutines (Go's poller waits on one
// descriptor at a time, so each direction needs a goroutine to block in),
// and no logging work unless a logger is set.
//
// handle itself returns once the copying has started: the dial's deep call
// chain grows a goroutine's stack past its first 2 KiB, and a stack does
// not shrink while its goroutine waits (only at a garbage collection, and
// only to half). Waiting out an idle connection on the dialing goroutine
// held that grown stack for the connection's whole life: 7.4 KiB of stacks
// per held connection, two thirds of its memory.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	upstream, err := p.dial()
	if err != nil {
		if p.Log != nil && !p.isClosed() {
			logf(p.Log, "forward: %s -> %s: giving up on client %s: %v", p.Listen, p.Target, client.RemoteAddr(), err)
		}
		client.Close()
		return
	}
	if !p.track(client, upstream) {
		client.Close()
		upstream.Close()
		return
	}
	if p.Debug != nil {
		logf(p.Debug, "forward: %s -> %s: client %s connected", p.Listen, p.Target, client.RemoteAddr())
	}
	// Counted before handle's own Done, so wg never passes through zero
	// while the connection lives; finish releases it.
	p.wg.Add(1)
	forwardBoth(p, client, upstream)
}

// finish ends a forwarded connection once both directions have ended, on
// the goroutine of the one that ended last.
func (p *Proxy) finish(client, upstream net.Conn, err1, err2 error) {
	p.untrack(client)
	client.Close()
	upstream.Close()
	if p.Debug != nil {
		if err := errors.Join(err1, err2); err != nil {
			logf(p.Debug, "forward: %s -> %s: client %s: %v", p.Listen, p.Target, client.RemoteAddr(), err)
		}
	}
	p.wg.Done()
}

// forwardBoth copies both ways at once, each direction in a goroutine of
// its own; the one that finishes last calls p.finish.
func forwardBoth(p *Proxy, client, upstream net.Conn) {
	ct, ok1 := client.(*net.TCPConn)
	ut, ok2 := upstream.(*net.TCPConn)
	if !ok1 || !ok2 {
		c := &pair{p: p, client: client, upstream: upstream}
		c.start(nil, nil)
		return
	}
	// One allocation holds both directions' state and the count.
	c, err := newPair(ct, ut)
	if err != nil {
		p.finish(client, upstream, err, nil)
		return
	}
	c.p = p
	c.start(&c.up, &c.down)
}

// dial connects to the target, retrying connect-phase failures with backoff
// until DialRetry has passed or the proxy is closed.
//
// Every try, the first included, runs under the DialRetry deadline: an
// upstream that does not answer at all (a hung backend whose accept queue is
// full drops the SYNs) would otherwise hold the client for the kernel's SYN
// retries, about two minutes, before the window even began. The target goes
// to DialContext as a string, whose address has no bind(2): Dialer.DialTCP
// turns the zero local address into one.
func (p *Proxy) dial() (net.Conn, error) {
	retry := p.DialRetry
	if retry == 0 {
		retry = DefaultDialRetry
	}
	ctx, cancel := p.ctx, context.CancelFunc(func() {})
	if retry > 0 {
		ctx, cancel = context.WithTimeout(p.ctx, retry)
	}
	defer cancel()
	// giveUp says why the last error is final: the deadline or Close.
	giveUp := func(err error) error {
		if p.ctx.Err() != nil {
			return fmt.Errorf("dial %s: %w (proxy closed)", p.Target, err)
		}
		return fmt.Errorf("dial %s: %w (gave up after %v)", p.Target, err, retry)
	}
	d := net.Dialer{KeepAlive: -1}
	backoff := 10 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "tcp", p.Target)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, giveUp(err)
		}
		logf(p.Debug, "forward: dial %s: %v; retrying in %v", p.Target, err, backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, giveUp(err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// proxyCopy copies src to dst until src reports end of stream, then shuts
// down dst's write half so the peer sees the same end of stream while the
// other direction keeps flowing. It is a named function so that it stands out
// in goroutine dumps. Between two *net.TCPConn (s not nil), stream.copy
// splices bulk in the kernel and holds nothing while the connection is idle.
func proxyCopy(s *stream, dst, src net.Conn) error {
	var err error
	if s != nil {
		err = s.copy()
	} else {
		_, err = io.Copy(dst, src)
	}
	if err != nil {
		// A reset or a failed write: the stream is broken both ways, so
		// propagate that at once rather than wait for the other direction.
		dst.Close()
		src.Close()
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
	return dst.Close()
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

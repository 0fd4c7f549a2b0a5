package forward

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startProxy starts a proxy on a free loopback port in front of target.
func startProxy(t *testing.T, target string, retry time.Duration) *Proxy {
	t.Helper()
	p := &Proxy{Listen: "127.0.0.1:0", Target: target, DialRetry: retry}
	if err := p.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// serve runs handle on each connection ln accepts, each in its own
// goroutine, and closes the connection after; it stops when ln is closed.
func serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// echoServer answers each connection by echoing until EOF, then closing.
func echoServer(t *testing.T, ln net.Listener) {
	t.Helper()
	serve(ln, func(c net.Conn) { io.Copy(c, c) })
}

// echoProxy starts an echo upstream and a proxy in front of it, and returns
// the proxy and a client connected through it.
func echoProxy(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	up := listen(t)
	echoServer(t, up)
	p := startProxy(t, up.Addr().String(), 0)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRoundTripLargeExact(t *testing.T) {
	_, c := echoProxy(t)
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo differs: got %d bytes, sent %d", len(got), len(payload))
	}
}

// A client that half-closes right after its request must still get a
// response that comes much later: socat's default drops it after 0.5 s.
func TestHalfCloseSlowResponse(t *testing.T) {
	up := listen(t)
	const delay = 700 * time.Millisecond
	go func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // until the client's half-close arrives
		time.Sleep(delay)
		c.Write(append([]byte("reply to "), req...))
		c.Write([]byte(" and the last bytes before close"))
	}()
	p := startProxy(t, up.Addr().String(), 0)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "reply to ping and the last bytes before close"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// The upstream half-closes first (sends its greeting and EOF) while the
// client keeps sending: the client->upstream direction must keep flowing.
func TestHalfCloseFromUpstream(t *testing.T) {
	up := listen(t)
	received := make(chan string, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("hello"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		received <- string(b)
	}()
	p := startProxy(t, up.Addr().String(), 0)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read greeting: %q, %v", got, err)
	}
	c.Write([]byte("still talking"))
	c.(*net.TCPConn).CloseWrite()
	if got := <-received; got != "still talking" {
		t.Fatalf("upstream got %q", got)
	}
}

// A connection accepted before the backend listens is held and succeeds
// once it does: the Node executor never sees a reset.
func TestUpstreamLate(t *testing.T) {
	target := freeAddr(t)
	p := startProxy(t, target, 10*time.Second)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()

	// The proxy is now retrying; let the backend come up. A retry is
	// visible as nothing at all on the client side, which is the point.
	time.Sleep(100 * time.Millisecond)
	up, err := net.Listen("tcp", target)
	if err != nil {
		t.Fatalf("listen on %s: %v", target, err)
	}
	defer up.Close()
	echoServer(t, up)

	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != "early" {
		t.Fatalf("got %q", got)
	}
}

// With the upstream down for longer than DialRetry the client's connection
// is closed (not left hanging), and the proxy keeps serving afterwards.
func TestUpstreamDown(t *testing.T) {
	target := freeAddr(t)
	p := startProxy(t, target, 200*time.Millisecond)
	for i := range 3 {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		c.Close()
		if n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("read %d: n=%d err=%v, want EOF", i, n, err)
		}
	}
	// Back up: the same proxy serves.
	up, err := net.Listen("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	echoServer(t, up)
	roundTrip(t, p.Addr().String(), "back")
}

// A target named by host name is looked up for each dial, off the loop,
// and every address it has is tried: "localhost" may give [::1] first,
// where nothing listens here.
func TestHostNameTarget(t *testing.T) {
	up := listen(t) // 127.0.0.1 only
	echoServer(t, up)
	_, port, _ := net.SplitHostPort(up.Addr().String())
	p := startProxy(t, net.JoinHostPort("localhost", port), 5*time.Second)
	for i := range 3 {
		roundTrip(t, p.Addr().String(), fmt.Sprintf("by name %d", i))
	}

	// A name that does not resolve is retried until DialRetry, then the
	// client is closed and the lookup's error logged.
	var logged strings.Builder // read after Close, which waits for the loop
	bad := &Proxy{Listen: "127.0.0.1:0", Target: "no-such-host.invalid:3210", DialRetry: 300 * time.Millisecond,
		Log: log.New(&logged, "", 0)}
	if err := bad.Start(); err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	c, err := net.Dial("tcp", bad.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client of an unresolvable target: read n=%d err=%v, want it closed within DialRetry", n, err)
	}
	bad.Close()
	if !strings.Contains(logged.String(), "giving up on client") || !strings.Contains(logged.String(), "no-such-host.invalid") {
		t.Errorf("log %q lacks the give-up line naming the host", logged.String())
	}
}

func roundTrip(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(msg))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("round trip: got %q, %v; want %q", got, err, msg)
	}
}

func TestManyConcurrentConnections(t *testing.T) {
	up := listen(t)
	echoServer(t, up)
	p := startProxy(t, up.Addr().String(), 0)

	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := fmt.Sprintf("conn %d %s", i, strings.Repeat("x", i))
			c.Write([]byte(msg))
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != msg {
				errs <- fmt.Errorf("conn %d: got %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Close must unblock Serve, end open connections (also ones still waiting
// for the upstream) and leave no goroutine behind.
func TestCloseEndsEverything(t *testing.T) {
	up := listen(t)
	echoServer(t, up)
	p := &Proxy{Listen: "127.0.0.1:0", Target: up.Addr().String()}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waiting := &Proxy{Listen: "127.0.0.1:0", Target: freeAddr(t), DialRetry: time.Hour}
	if err := waiting.Start(); err != nil {
		t.Fatal(err)
	}

	open, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	roundTripOpen(t, open, "x")
	held, err := net.Dial("tcp", waiting.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	for _, px := range []*Proxy{p, waiting} {
		done := make(chan struct{})
		go func() { px.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Close of %s did not return", px.Listen)
		}
	}
	for _, c := range []net.Conn{open, held} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection still open after Close")
		}
	}
	if _, err := net.Dial("tcp", p.Addr().String()); err == nil {
		t.Fatalf("listener still accepting after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func roundTripOpen(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.Write([]byte(msg))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, []byte(msg)) {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

func TestCloseBeforeStart(t *testing.T) {
	p := &Proxy{Listen: "127.0.0.1:0", Target: "127.0.0.1:1"}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Start after Close: %v, want net.ErrClosed", err)
	}
}

func TestStartErrorNamesAddressAndFix(t *testing.T) {
	busy := listen(t)
	p := &Proxy{Listen: busy.Addr().String(), Target: "127.0.0.1:3210"}
	err := p.Start()
	if err == nil {
		p.Close()
		t.Fatal("Start on a busy port succeeded")
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error does not wrap EADDRINUSE: %v", err)
	}
	for _, want := range []string{"forward: listen " + busy.Addr().String(), "socat"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:80", true},
		{"127.1.2.3:80", true},
		{"[::1]:80", true},
		{"[::ffff:127.0.0.1]:80", true},
		{"0.0.0.0:80", false},
		{"[::]:80", false},
		{":80", false},
		{"10.0.0.1:80", false},
		{"localhost:80", false}, // not resolved on purpose
		{"127.0.0.1", false},
		{"", false},
	} {
		if got := IsLoopback(tc.addr); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// The forwarder's sockets are plain TCP without keep-alive (Go's defaults,
// Multipath TCP listeners since 1.24 and keep-alive on every connection,
// cost system calls and do nothing on loopback), and both legs have
// TCP_NODELAY: the client's inherited from the listener.
func TestSocketOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(t, ln)
	p := startProxy(t, ln.Addr().String(), 0)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err) // the echo came back: both legs exist
	}
	legs := map[string]int{
		"listener": p.loop.lfd,
		"client":   socketWith(t, p.Addr().String(), c.LocalAddr().String()),
		"upstream": socketWith(t, "", ln.Addr().String()),
	}
	for name, fd := range legs {
		for _, o := range []struct {
			what       string
			level, opt int
			want       int
		}{
			{"SO_PROTOCOL", syscall.SOL_SOCKET, syscall.SO_PROTOCOL, syscall.IPPROTO_TCP},
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 0},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		} {
			got, err := syscall.GetsockoptInt(fd, o.level, o.opt)
			if err != nil {
				t.Fatalf("%s: getsockopt %s: %v", name, o.what, err)
			}
			if got != o.want {
				t.Errorf("%s: %s %d, want %d", name, o.what, got, o.want)
			}
		}
	}
}

// socketWith is the one socket of this process whose local address is
// local (any, if empty) and whose peer is remote.
func socketWith(t *testing.T, local, remote string) int {
	t.Helper()
	found := -1
	for _, f := range ownFDs(t) {
		if !strings.HasPrefix(f.Target, "socket:") {
			continue
		}
		fd := f.Num
		sa, err := unix.Getpeername(fd)
		if err != nil || sockaddrString(sa) != remote {
			continue
		}
		if sa, err := unix.Getsockname(fd); local != "" && (err != nil || sockaddrString(sa) != local) {
			continue
		}
		if found >= 0 {
			t.Fatalf("two sockets %s -> %s: %d and %d", local, remote, found, fd)
		}
		found = fd
	}
	if found < 0 {
		t.Fatalf("no socket %s -> %s", local, remote)
	}
	return found
}

// An upstream that never answers (a hung backend with a full accept queue
// drops every SYN) holds a client for DialRetry, not for the kernel's two
// minutes of SYN retries: the first dial is under the deadline too.
func TestUnansweredUpstreamBoundedByDialRetry(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // never accepted from
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue; once full, the kernel drops further SYNs.
	for i := 0; i < 2; i++ {
		c, err := net.DialTimeout("tcp", target, 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
	}
	p := startProxy(t, target, 300*time.Millisecond)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("client still held 10s after a 300ms DialRetry: the unanswered dial is not bounded")
	}
	if err == nil {
		t.Fatal("read a byte from an upstream that never answered")
	}
}

// Start and Close at once: Close waits for the serving goroutine whatever
// the interleaving (run with -race: a WaitGroup Add racing its Wait shows).
func TestStartRacesClose(t *testing.T) {
	for i := 0; i < 100; i++ {
		p := &Proxy{Listen: "127.0.0.1:0", Target: "127.0.0.1:1"}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); p.Start() }()
		go func() { defer wg.Done(); p.Close() }()
		wg.Wait()
		p.Close()
	}
}

// With one P (a container limited to one CPU: Go sets GOMAXPROCS from the
// cgroup's quota), the loop blocking in epoll_wait must not keep the rest
// of the process from running: the test's own goroutines, the echo server
// and the clients share that P with it.
func TestOneP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	_, c := echoProxy(t)
	for i := range 50 {
		exchange(t, c, []byte(fmt.Sprintf("one P, burst %d", i)))
	}
	exchange(t, c, random(4<<20))
	ticked := make(chan struct{})
	go func() { close(ticked) }()
	select {
	case <-ticked:
	case <-time.After(10 * time.Second):
		t.Fatal("a goroutine did not run in 10 s beside the idle loop")
	}
}

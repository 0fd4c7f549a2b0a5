package forward

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/proc"
)

// pipeFds counts this process's pipe descriptors.
func pipeFds(t *testing.T) int {
	t.Helper()
	n := 0
	for _, fd := range ownFDs(t) {
		if strings.HasPrefix(fd.Target, "pipe:") {
			n++
		}
	}
	return n
}

func ownFDs(t *testing.T) []proc.FD {
	t.Helper()
	fds, err := proc.FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return fds
}

// exchange sends msg through c and reads the echo back, exactly.
func exchange(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	// A forwarder that loses or invents bytes would leave ReadFull waiting.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d bytes back: %v", len(msg), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write %d bytes: %v", len(msg), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("%d bytes came back different", len(msg))
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// A keep-alive connection alternates small requests with bulk ones: every
// switch between the buffer and the splice road keeps the bytes exact.
func TestMixedBurstsExact(t *testing.T) {
	_, c := echoProxy(t)
	for i, n := range []int{1, 200, smallBurst - 1, smallBurst, smallBurst + 1, 3 << 20, 100, 5 << 20, 7, 64 << 10, 1} {
		t.Run(fmt.Sprintf("%d/%d bytes", i, n), func(t *testing.T) { exchange(t, c, random(n)) })
	}
}

// An idle forwarded connection holds its two sockets and no splice pipe:
// TCPConn.ReadFrom kept a 1 MiB pipe per direction for a connection's whole
// life, six descriptors per connection instead of two.
func TestIdleConnectionsHoldNoPipes(t *testing.T) {
	up := listen(t)
	// An echo through a user-space buffer: the test counts this process's
	// pipes, and io.Copy between TCP connections would take some too.
	serve(up, func(c net.Conn) {
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 64<<10))
	})
	p := startProxy(t, up.Addr().String(), 0)
	before := pipeFds(t)

	// Enough connections that per-connection pipes would dwarf the pool's.
	n := 10*runtime.GOMAXPROCS(0) + 20
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// One bulk burst each way, so that both directions have spliced.
		exchange(t, c, random(1<<20))
	}
	// Each loop may keep a few free pipes for the next burst; per
	// connection nothing. ReadFrom held 2 pipes (4 descriptors) per
	// connection.
	if got, pool := pipeFds(t)-before, 2*maxFreePipes; got > pool {
		t.Errorf("%d idle forwarded connections hold %d pipe descriptors, want at most %d (the pool's)", n, got, pool)
	} else {
		t.Logf("%d idle forwarded connections, %d pipe descriptors (ReadFrom would hold %d)", n, got, 4*n)
	}
}

// A write that fails with bytes still in the splice pipe must not put that
// pipe back in the pool, where the next connection would forward those
// bytes as its own.
func TestBrokenBulkDoesNotLeakIntoTheNextConnection(t *testing.T) {
	up := listen(t)
	// The upstream sends 32 MiB of 'x' at once; the client resets after
	// reading a little, while the forwarder has a pipe full of them.
	serve(up, func(c net.Conn) {
		var first [1]byte
		if _, err := c.Read(first[:]); err != nil {
			return
		}
		if first[0] == 'x' {
			c.Write(bytes.Repeat([]byte("x"), 32<<20))
			return
		}
		io.Copy(c, io.MultiReader(bytes.NewReader(first[:]), c))
	})
	p := startProxy(t, up.Addr().String(), 0)

	for range 5 {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 256<<10))
		c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	}
	// Once the forwarder has dropped the reset connections, their pipes
	// are discarded or back in the pool.
	deadline := time.Now().Add(5 * time.Second)
	for {
		open := p.open.Load()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d forwarded connections still open 5s after their clients reset", open)
		}
		time.Sleep(time.Millisecond)
	}

	for i := range 10 {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		msg := random(2 << 20)
		msg[0] = 'e' // an echo, not a flood
		if !t.Run(fmt.Sprintf("connection %d after the resets", i), func(t *testing.T) { exchange(t, c, msg) }) {
			break
		}
		c.Close()
	}
}

// Out of descriptors, a bulk stream cannot take a pipe: it goes on through
// the buffer, exactly.
func TestBulkWithoutPipes(t *testing.T) {
	_, c := echoProxy(t)
	exchange(t, c, random(100)) // both legs exist now

	var refused atomic.Int64
	refuse := func([]int, int) error { refused.Add(1); return syscall.EMFILE }
	pipe2Hook.Store(&refuse)
	defer pipe2Hook.Store(nil)
	// No loop has a free pipe: the 100 bytes went through scratch.
	exchange(t, c, random(4<<20))
	if refused.Load() == 0 {
		t.Fatalf("4 MiB went through without asking for a pipe: the test did not exercise the fallback")
	}
}

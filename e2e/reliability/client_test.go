package reliability

// Clients of the helpers' protocol (helper_test.go). They must be called on
// a goroutine that nsRun has put into the shim's network namespace.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialFrom dials addr from source address src ("" for the kernel's choice).
// With a source address the port is still chosen at connect time
// (IP_BIND_ADDRESS_NO_PORT), per destination, so TIME_WAIT reuse applies.
func dialFrom(src, addr string, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d.Dial("tcp", addr)
}

// dialEcho opens an echo connection and proves it reaches the server with
// one round trip.
func dialEcho(src, addr string) (net.Conn, error) {
	c, err := dialFrom(src, addr, 20*time.Second)
	if err != nil {
		return nil, err
	}
	if err := echoRoundTrip(c, "echo\nping\n", "ok\nping\n"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// echoRoundTrip writes send and expects want back within 30 s.
func echoRoundTrip(c net.Conn, send, want string) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, send); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read %q: %w (got %q)", want, err, got)
	}
	if string(got) != want {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

// shortRequest is one short connection: connect, request, read the answer
// and the server's close, close.
func shortRequest(src, addr string, n int) error {
	c, err := dialFrom(src, addr, 20*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "req %d\n", n); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w (got %q)", err, b)
	}
	if want := fmt.Sprintf("resp %d\n", n); string(b) != want {
		return fmt.Errorf("got %q, want %q", b, want)
	}
	return nil
}

// streamResult is what one verified stream saw.
type streamResult struct {
	sentCRC, recvCRC   uint32 // this end's
	trailer            string // the server's
	exact, serverExact bool
}

// runStream sends size bytes of stream seed and receives size bytes of the
// server's, both at once, verifying every byte, then checks the server's
// trailer: its CRC of what it received equals ours of what we sent, and the
// other way round.
func runStream(addr string, size int64, seed uint64) (streamResult, error) {
	var res streamResult
	c, err := dialFrom("", addr, 20*time.Second)
	if err != nil {
		return res, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "stream %d %d\n", size, seed); err != nil {
		return res, err
	}
	sent := make(chan error, 1)
	go func() {
		crc, err := sendStream(c, size, seed)
		res.sentCRC = crc
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	br := bufio.NewReaderSize(c, chunkSize)
	recv, exact, err := recvStream(br, size, seed^downKey)
	if err != nil {
		return res, fmt.Errorf("receive: %w", err)
	}
	if err := <-sent; err != nil {
		return res, fmt.Errorf("send: %w", err)
	}
	res.recvCRC, res.exact = recv, exact
	line, err := br.ReadString('\n')
	if err != nil {
		return res, fmt.Errorf("trailer: %w (got %q)", err, line)
	}
	res.trailer = strings.TrimSpace(line)
	if _, err := br.ReadByte(); err != io.EOF {
		return res, fmt.Errorf("after the trailer: %v, want EOF", err)
	}
	want := fmt.Sprintf("trailer sent=%08x recv=%08x exact=true eof=true", res.recvCRC, res.sentCRC)
	res.serverExact = strings.Contains(res.trailer, "exact=true")
	if !exact || res.trailer != want {
		return res, fmt.Errorf("stream %d: client exact=%v, server trailer %q, want %q", seed, exact, res.trailer, want)
	}
	return res, nil
}

package forward

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"
)

// benchRequest and benchResponse are the size of a callback's request line
// and of the backend's /version answer.
var (
	benchRequest  = []byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	benchResponse = []byte("HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nunknown-bench-backend\n")
)

// oneConnection is one short connection to addr: connect, send the request
// and half-close, read the response to the upstream's close.
func oneConnection(tb testing.TB, addr *net.TCPAddr, buf []byte) {
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(benchRequest); err != nil {
		tb.Fatal(err)
	}
	c.CloseWrite()
	n, err := io.ReadFull(c, buf[:len(benchResponse)])
	if err != nil || !bytes.Equal(buf[:n], benchResponse) {
		tb.Fatalf("response %q, %v", buf[:n], err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		tb.Fatalf("after the response: %v, want EOF", err)
	}
}

// benchUpstream answers every connection with benchResponse once the
// client's half-close arrives, then closes.
func benchUpstream(tb testing.TB) *net.TCPAddr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	serve(ln, func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write(benchResponse)
	})
	return ln.Addr().(*net.TCPAddr)
}

// mallocs is the process's count of heap allocations and bytes so far.
func mallocs() (n, bytes uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs, ms.TotalAlloc
}

// BenchmarkConnection is the forwarder's per-connection path (accept,
// dial, copy both ways, half-close both ways, close) with a request and a
// response the size of a callback's. Client and upstream run in the same
// process, so besides allocs/op (theirs included) it reports the
// forwarder's own: fwd-allocs/op and fwd-B/op are the allocations per
// forwarded connection less those of the same connection made directly.
func BenchmarkConnection(b *testing.B) {
	up := benchUpstream(b)
	p := &Proxy{Listen: "127.0.0.1:0", Target: up.String()}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	fwd := p.Addr().(*net.TCPAddr)
	buf := make([]byte, 4096)

	const directRuns = 2000
	for range 100 { // warm both paths
		oneConnection(b, up, buf)
		oneConnection(b, fwd, buf)
	}
	n0, b0 := mallocs()
	for range directRuns {
		oneConnection(b, up, buf)
	}
	n1, b1 := mallocs()

	b.ReportAllocs()
	b.ResetTimer()
	n2, b2 := mallocs()
	for b.Loop() {
		oneConnection(b, fwd, buf)
	}
	n3, b3 := mallocs()
	ops := float64(b.N)
	b.ReportMetric(float64(n3-n2)/ops-float64(n1-n0)/directRuns, "fwd-allocs/op")
	b.ReportMetric(float64(b3-b2)/ops-float64(b1-b0)/directRuns, "fwd-B/op")
}

// Command load is the load generator of make bench. It speaks just enough
// HTTP/1.1 to drive the bench upstream (bench/upstream) directly or through
// a forwarder, times every request on its own, and prints one JSON object.
//
//	load -addr 127.0.0.1:80 -mode conn -c 64 -d 3s -warmup 500ms
//
// Modes (each worker is a closed loop: one request at a time):
//
//	conn       a new connection per request: connect, GET /version with
//	           Connection: close, read to EOF; latency includes the connect
//	keepalive  c persistent connections, GET /version again and again
//	bulk       c streams, each one GET /bulk of endless length read with a
//	           256 KiB buffer until the time is up: bytes per second
//	hold       c connections, one GET /version each, then held idle; prints
//	           "held" and waits until stdin closes (for memory readings)
//
// In keepalive and bulk modes all connections are made before the clock
// starts: those cases measure established connections. The window is the
// -d after the -warmup: the rate counts requests that ended in it; latency
// percentiles and errors cover the requests that started in it, however
// late they ended, so a straggler is never hidden. Totals (warm-up
// included) are for the caller to divide CPU time by. Everything is
// bounded: no request outlives -timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type result struct {
	Mode       string           `json:"mode"`
	Conc       int              `json:"conc"`
	GOMAXPROCS int              `json:"gomaxprocs"`
	Setup      float64          `json:"setup_s"`  // connecting before the clock started
	Window     float64          `json:"window_s"` // measured seconds, after warm-up
	Requests   int64            `json:"requests"` // succeeded, ending in the window
	Errors     int64            `json:"errors"`   // failed, started in the window
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	RPS        float64          `json:"rps"`
	P50        float64          `json:"p50_ms"`
	P90        float64          `json:"p90_ms"`
	P99        float64          `json:"p99_ms"`
	P999       float64          `json:"p999_ms"`
	Max        float64          `json:"max_ms"`
	Bytes      int64            `json:"bytes"` // bulk: received in the window
	GBps       float64          `json:"gb_per_s"`
	// Totals over the whole run, warm-up included.
	TotalRequests int64 `json:"total_requests"`
	TotalBytes    int64 `json:"total_bytes"`
}

// worker is what one closed-loop worker counted.
type worker struct {
	lat        []time.Duration // requests started in the window that succeeded
	errs       map[string]int64
	done       int64 // successful requests that ended in the window
	totalOK    int64
	bytes      int64 // in the window
	totalBytes int64
}

// record counts one request that ran from t0 to t1.
func (w *worker) record(t0, t1, warmEnd, end time.Time, err error) {
	if err == nil {
		w.totalOK++
		if !t1.Before(warmEnd) && t1.Before(end) {
			w.done++
		}
	}
	if t0.Before(warmEnd) {
		return
	}
	if err != nil {
		w.fail(err)
		return
	}
	w.lat = append(w.lat, t1.Sub(t0))
}

func (w *worker) fail(err error) {
	if w.errs == nil {
		w.errs = make(map[string]int64)
	}
	w.errs[classify(err)]++
}

var (
	addr    = flag.String("addr", "127.0.0.1:80", "address to load")
	mode    = flag.String("mode", "conn", "conn, keepalive, bulk or hold")
	conc    = flag.Int("c", 1, "concurrent workers (connections, streams)")
	dur     = flag.Duration("d", 3*time.Second, "measured duration, after the warm-up")
	warmup  = flag.Duration("warmup", 500*time.Millisecond, "unmeasured warm-up")
	timeout = flag.Duration("timeout", 5*time.Second, "bound on any one request")
)

func main() {
	flag.Parse()
	if *conc < 1 {
		fatal(errors.New("-c must be at least 1"))
	}
	// An IP:port, checked once, so that no resolver runs per connection.
	if _, err := netip.ParseAddrPort(*addr); err != nil {
		fatal(fmt.Errorf("-addr: want IP:port: %w", err))
	}
	var run func(*worker, net.Conn, time.Time, time.Time)
	switch *mode {
	case "conn":
		run = connWorker
	case "keepalive":
		run = keepaliveWorker
	case "bulk":
		run = bulkWorker
	case "hold":
		hold()
		return
	default:
		fatal(fmt.Errorf("unknown -mode %q", *mode))
	}

	ws := make([]worker, *conc)
	// Keep-alive and bulk measure established connections: connect them
	// all before the clock starts (a forwarder with a short accept backlog
	// would otherwise spend the window in SYN retransmits).
	conns := make([]net.Conn, *conc)
	t0 := time.Now()
	if *mode != "conn" {
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dial(time.Now().Add(*timeout))
				if err != nil {
					ws[i].fail(fmt.Errorf("setup: %w", err))
					return
				}
				conns[i] = c
			}()
		}
		wg.Wait()
	}
	start := time.Now()
	warmEnd := start.Add(*warmup)
	end := warmEnd.Add(*dur)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(&ws[i], conns[i], warmEnd, end)
		}()
	}
	wg.Wait()

	r := result{Mode: *mode, Conc: *conc, GOMAXPROCS: runtime.GOMAXPROCS(0), Setup: start.Sub(t0).Seconds()}
	var lat []time.Duration
	for i := range ws {
		w := &ws[i]
		lat = append(lat, w.lat...)
		r.Requests += w.done
		r.TotalRequests += w.totalOK
		r.Bytes += w.bytes
		r.TotalBytes += w.totalBytes
		for k, n := range w.errs {
			if r.ErrorKinds == nil {
				r.ErrorKinds = make(map[string]int64)
			}
			r.ErrorKinds[k] += n
			r.Errors += n
		}
	}
	r.Window = dur.Seconds()
	r.GBps = float64(r.Bytes) / r.Window / 1e9
	r.RPS = float64(r.Requests) / r.Window
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(q float64) float64 {
			i := min(int(q*float64(len(lat))), len(lat)-1)
			return float64(lat[i]) / 1e6
		}
		r.P50, r.P90, r.P99, r.P999 = ms(0.50), ms(0.90), ms(0.99), ms(0.999)
		r.Max = float64(lat[len(lat)-1]) / 1e6
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

var (
	closeReq = []byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	keepReq  = []byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	bulkReq  = []byte("GET /bulk?bytes=1125899906842624 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") // 1 PiB: endless
)

func connWorker(w *worker, _ net.Conn, warmEnd, end time.Time) {
	buf := make([]byte, 4096)
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		err := connRequest(buf, t0.Add(*timeout))
		w.record(t0, time.Now(), warmEnd, end, err)
	}
}

// dial connects to -addr without TCP keep-alive (Go's default would cost
// four setsockopt calls per connection, and loopback needs no probes).
//
// The address goes to DialContext as a string: Dialer.DialTCP binds the
// zero local address it is given, and a port taken by bind(2) is exclusive
// and stays so through TIME_WAIT, where connect(2) needs only a unique
// 4-tuple and reuses TIME_WAIT ports on loopback. The scale cases hold
// 9,000 connections and churn thousands more per path, one path after
// another: bound ports ran the 28,232 of the ephemeral range out, holds
// failed, and both binds and every forwarder's own connects spent
// milliseconds searching the range (3,111 µs of forwarder CPU per new
// connection at 9,000 held in one run, against 236 µs with nothing left
// over from earlier cases).
func dial(deadline time.Time) (*net.TCPConn, error) {
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	c, err := d.DialContext(context.Background(), "tcp", *addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func connRequest(buf []byte, deadline time.Time) error {
	c, err := dial(deadline)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(closeReq); err != nil {
		return err
	}
	n := 0
	for {
		k, err := c.Read(buf[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if n == len(buf) {
			return errors.New("response too long")
		}
	}
	return checkWhole(buf[:n])
}

// checkWhole checks a complete 200 response: status, and a body as long as
// its Content-Length.
func checkWhole(b []byte) error {
	if len(b) == 0 {
		return errEmpty
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) {
		return errStatus
	}
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		return errShort
	}
	cl := contentLength(b[:i+2])
	if cl < 0 || int64(len(b)-i-4) != cl {
		return errShort
	}
	return nil
}

func contentLength(head []byte) int64 {
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(k, []byte("Content-Length")) {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

var (
	errEmpty  = errors.New("empty response")
	errStatus = errors.New("status not 200")
	errShort  = errors.New("short or malformed response")
)

func keepaliveWorker(w *worker, c net.Conn, warmEnd, end time.Time) {
	var br *bufio.Reader
	if c != nil {
		c.SetDeadline(end.Add(*timeout))
		br = bufio.NewReaderSize(c, 16<<10)
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		var err error
		if c == nil {
			var tc *net.TCPConn
			if tc, err = dial(time.Now().Add(*timeout)); err == nil {
				c = tc
				c.SetDeadline(end.Add(*timeout))
				br = bufio.NewReaderSize(c, 16<<10)
			}
		}
		if err == nil {
			if _, err = c.Write(keepReq); err == nil {
				err = readResponse(br)
			}
			if err != nil {
				c.Close()
				c = nil
			}
		}
		w.record(t0, time.Now(), warmEnd, end, err)
		if err != nil && c == nil {
			time.Sleep(time.Millisecond) // no busy loop on a dead target
		}
	}
}

// readResponse reads one 200 response with a Content-Length from br.
func readResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return errStatus
	}
	cl := int64(-1)
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if n := contentLength(line); n >= 0 {
			cl = n
		}
	}
	if cl < 0 {
		return errShort
	}
	_, err = br.Discard(int(cl))
	return err
}

func bulkWorker(w *worker, c net.Conn, warmEnd, end time.Time) {
	if c == nil {
		return // the setup failure is counted
	}
	defer c.Close()
	c.SetDeadline(end)
	if _, err := c.Write(bulkReq); err != nil {
		w.fail(err)
		return
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		now := time.Now()
		w.totalBytes += int64(n)
		if !now.Before(warmEnd) && now.Before(end) {
			w.bytes += int64(n)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			w.fail(err)
			return
		}
	}
}

// hold opens -c connections, makes one request on each, reports "held" and
// keeps them idle until stdin is closed (bounded by -timeout after -d).
func hold() {
	var conns []net.Conn
	r := result{Mode: "hold", Conc: *conc, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	for range *conc {
		c, err := dial(time.Now().Add(*timeout))
		if err == nil {
			c.SetDeadline(time.Now().Add(*timeout))
			if _, err = c.Write(keepReq); err == nil {
				err = readResponse(bufio.NewReader(c))
			}
		}
		if err != nil {
			r.Errors++
			continue
		}
		r.Requests++
		conns = append(conns, c)
	}
	fmt.Println("held")
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(*dur + *timeout):
	}
	for _, c := range conns {
		c.Close()
	}
	r.TotalRequests = r.Requests
	json.NewEncoder(os.Stdout).Encode(r)
}

// classify names an error briefly, for the error counts.
func classify(err error) string {
	var op string
	var oe *net.OpError
	if errors.As(err, &oe) {
		op = oe.Op + ": "
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return op + "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return op + "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return op + "reset"
	case errors.Is(err, syscall.EPIPE):
		return op + "broken pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return op + "no local port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return op + "EOF"
	case err == errEmpty, err == errStatus, err == errShort:
		return err.Error()
	}
	return op + "other"
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "load:", err)
	os.Exit(2)
}

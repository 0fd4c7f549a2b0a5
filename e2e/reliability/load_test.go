package reliability

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/proc"
)

// shimFigures is what /proc shows of the shim at one moment.
type shimFigures struct {
	fds     int
	kinds   map[string]int
	threads int
	rssKB   int
}

func measure(pid int) shimFigures {
	k, _ := fdKinds(pid)
	n := 0 // what could be read: a descriptor closed while listing is not counted
	for _, c := range k {
		n += c
	}
	return shimFigures{fds: n, kinds: k, threads: threads(pid), rssKB: rssKB(pid)}
}

func (f shimFigures) String() string {
	other := f.fds - f.kinds["socket"] - f.kinds["pipe"]
	return fmt.Sprintf("%d fds (%d sockets, %d pipe ends, %d other), %d threads, RSS %.1f MiB",
		f.fds, f.kinds["socket"], f.kinds["pipe"], other, f.threads, float64(f.rssKB)/1024)
}

// heldTarget is how many connections a held-connections test opens: want,
// unless RLIMIT_NOFILE cannot cover perConn descriptors each, in which case
// the most it can: logged in make test, a failure with the kernel's reason
// in make soak, which must show the full figure.
func heldTarget(t *testing.T, perConn, want int) int {
	t.Helper()
	n := (int(nofileLimit) - 200) / perConn
	if n >= want {
		return want
	}
	n = n / 100 * 100
	reason := fmt.Sprintf("RLIMIT_NOFILE is %d and each forwarded connection costs the process %d descriptors, so at most %d connections fit; %v", nofileLimit, perConn, n, nofileErr)
	if soak {
		// The full figure is the point of make soak; go on with what fits,
		// for the other figures, but fail.
		t.Errorf("cannot hold %d connections: %s", want, reason)
	} else {
		t.Logf("NOTE: holding %d connections, not %d: %s", n, want, reason)
	}
	return n
}

// openHeld opens n echo connections through addr from inside pid's network
// namespace, each proven with a round trip.
func openHeld(pid, n int, addr string) ([]net.Conn, error) {
	const workers = 8
	conns := make([]net.Conn, n)
	err := nsRun(pid, workers, func(w int) error {
		for i := w; i < n; i += workers {
			c, err := dialEcho("", addr)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// roundTripAll proves every connection still forwards, both ways.
func roundTripAll(conns []net.Conn) error {
	const workers = 8
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < len(conns); i += workers {
				if err := echoRoundTrip(conns[i], "pong\n", "pong\n"); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// 10,000 concurrent forwarded connections through the real binary as PID 1,
// each proven end to end with a round trip when opened and again after the
// hold; then closed by the clients. The shim's sockets must come back to
// their idle count. A held connection costs the shim its two sockets and
// nothing else (Go's TCPConn.ReadFrom held a splice pipe per direction, 6
// descriptors per connection, until the forwarder copied burst by burst):
// no pipe while holding, none left after close, and a second round of the
// same size must not grow anything.
//
// Goroutines: the binary has no introspection endpoint, so here its
// descriptors, threads and RSS stand in for them; TestHeldConnectionsGoroutines
// counts the goroutines of the same forward.Proxy run in a process of its
// own.
func TestHeld10000Connections(t *testing.T) {
	n := heldTarget(t, 2, 10000)
	hold := scale(3*time.Second, 60*time.Second)
	// Each round leaves 2n connections in TIME-WAIT (the clients' and the
	// shim's upstream ones) for 60 s: the next round needs the wide port range.
	r := start(t, opts{PID1: true, Env: []string{"REL_LISTEN=127.0.0.1:3210"}, Setup: `
echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range`})
	r.Line("listening")
	idle := measure(r.PID)
	t.Logf("idle: %v", idle)

	for round := 1; round <= 2; round++ {
		t0 := time.Now()
		conns, err := openHeld(r.PID, n, "127.0.0.1:80")
		if err != nil {
			t.Fatalf("round %d: opening %d connections: %v", round, n, err)
		}
		peak := measure(r.PID)
		t.Logf("round %d: %d connections open and answered in %v; shim: %v", round, n, time.Since(t0).Round(time.Millisecond), peak)
		if got, want := peak.kinds["socket"], idle.kinds["socket"]+2*n; got != want {
			t.Errorf("round %d: shim holds %d sockets with %d connections open, want %d", round, got, n, want)
		}
		if got, want := peak.fds-peak.kinds["socket"], idle.fds-idle.kinds["socket"]; got != want {
			t.Errorf("round %d: shim holds %d descriptors besides sockets with %d connections open, %d when idle: %v", round, got, n, want, peak.kinds)
		}
		time.Sleep(hold) // holding them is the point
		if err := roundTripAll(conns); err != nil {
			closeAll(conns)
			t.Fatalf("round %d: after %v held: %v", round, hold, err)
		}
		t.Logf("round %d: after %v held all %d answered again; shim: %v", round, hold, n, measure(r.PID))

		t1 := time.Now()
		closeAll(conns)
		var after shimFigures
		back := eventually(60*time.Second, 20*time.Millisecond, func() bool {
			after = measure(r.PID)
			return after.kinds["socket"] == idle.kinds["socket"]
		})
		t.Logf("round %d: closed; sockets back to idle (%d) in %v: %v; shim: %v %v", round, idle.kinds["socket"], time.Since(t1).Round(time.Millisecond), back, after, after.kinds)
		if !back {
			t.Fatalf("round %d: shim sockets %d, idle %d, 60s after the clients closed", round, after.kinds["socket"], idle.kinds["socket"])
		}
		// The round trips are small bursts, copied through a buffer: no
		// pipe is taken, so none can be pooled; everything is back at once.
		if after.fds != idle.fds {
			t.Errorf("round %d: %d descriptors after the clients closed, %d when idle: %v", round, after.fds, idle.fds, after.kinds)
		}
	}

	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(30 * time.Second); code != 0 {
		t.Fatalf("shim exit %d after SIGTERM, want 0", code)
	}
}

// The goroutine count the real binary cannot report: the same
// forward.Proxy the shim runs, in a helper process of its own (so that its
// descriptors are its own), under the same load. Its one event loop serves
// every connection: held connections add no goroutine, and none is left
// after the clients close.
func TestHeldConnectionsGoroutines(t *testing.T) {
	n := heldTarget(t, 2, 10000)
	r := start(t, opts{Args: []string{"--forward", "off"}, Env: []string{
		"REL_LISTEN=127.0.0.1:3210", "REL_PROXY=127.0.0.1:81=127.0.0.1:3210"}})
	r.Line("listening")
	var proxyPid int
	fmt.Sscanf(r.Line("proxy listening pid="), "proxy listening pid=%d", &proxyPid)
	seq := 0
	goroutines := func() (total, loops int) {
		t.Helper()
		seq++
		if err := syscall.Kill(proxyPid, syscall.SIGUSR1); err != nil {
			t.Fatalf("signal proxy: %v", err)
		}
		l := r.Line(fmt.Sprintf("proxy seq=%d ", seq))
		fmt.Sscanf(l, "proxy seq=%d goroutines=%d loop=%d", &seq, &total, &loops)
		return
	}
	idle, idleLoops := goroutines()
	if idleLoops != 1 {
		t.Fatalf("idle proxy: %d event loops in its goroutine dump, want 1", idleLoops)
	}
	conns, err := openHeld(r.PID, n, "127.0.0.1:81")
	if err != nil {
		t.Fatalf("opening %d connections: %v", n, err)
	}
	peak, loops := goroutines()
	t.Logf("idle %d goroutines; with %d connections open %d (%d event loop); proxy fds %d", idle, n, peak, loops, fdCount(proxyPid))
	// With net.TCPConn it was two goroutines per connection, one per
	// direction, each holding a stack for the connection's whole life.
	if peak != idle || loops != 1 {
		t.Errorf("%d goroutines (%d event loops) with %d connections open, %d idle; want no more than idle, and 1 loop", peak, loops, n, idle)
	}
	if err := roundTripAll(conns); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	closeAll(conns)
	var total int
	if !eventually(60*time.Second, 50*time.Millisecond, func() bool {
		total, loops = goroutines()
		return total == idle && loops == 1
	}) {
		t.Fatalf("60s after the clients closed: %d goroutines (idle %d), %d event loops", total, idle, loops)
	}
	t.Logf("closed: back to %d goroutines in %v", total, time.Since(t0).Round(time.Millisecond))
}

// 10 GB through the real binary's forwarder
// over 4 streams, half each way at once: every byte is compared with what
// the sender sent, and each end's CRC-32C of what it sent equals the other
// end's of what it received.
func TestBytesVerified(t *testing.T) {
	const streams = 4
	total := int64(10e9)
	size := total / streams / 2 // per stream per direction
	r := start(t, opts{PID1: true, Env: []string{"REL_LISTEN=127.0.0.1:3210"}})
	r.Line("listening")
	cpu0 := cpuTime(r.PID)
	t0 := time.Now()
	results := make([]streamResult, streams)
	err := nsRun(r.PID, streams, func(i int) error {
		res, err := runStream("127.0.0.1:80", size, uint64(i+1))
		results[i] = res
		return err
	})
	elapsed := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range results {
		t.Logf("stream %d: %d bytes each way, client sent crc %08x received crc %08x, server %q", i+1, size, res.sentCRC, res.recvCRC, res.trailer)
	}
	t.Logf("%.2f GB verified byte for byte in %v (%.0f MB/s through the forwarder); shim CPU %v; shim after: %v",
		float64(total)/1e9, elapsed.Round(time.Millisecond), float64(total)/1e6/elapsed.Seconds(), cpuTime(r.PID)-cpu0, measure(r.PID))
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(30 * time.Second); code != 0 {
		t.Fatalf("shim exit %d after SIGTERM, want 0", code)
	}
}

// 1,000,000 short connections (make soak; 50,000 in make test): connect,
// request, read the answer and the close, close; from 8 source addresses in
// 127.0.0.0/8, with a wide ephemeral port range and tcp_tw_reuse in the
// private namespace. Not one may fail.
func TestShortConnections(t *testing.T) {
	const workers = 16
	total := scale(50_000, 1_000_000)
	budget := scale(4*time.Minute, 40*time.Minute)
	r := start(t, opts{PID1: true, Env: []string{"REL_LISTEN=127.0.0.1:3210"}, Setup: `
echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range
echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse`})
	r.Line("listening")
	idle := measure(r.PID)
	var next, done, failed atomic.Int64
	var mu sync.Mutex
	kinds := map[string]int{}
	deadline := time.Now().Add(budget)
	t0 := time.Now()
	progress := make(chan struct{})
	go func() {
		for {
			select {
			case <-progress:
				return
			case <-time.After(30 * time.Second):
				d := done.Load()
				t.Logf("%d connections after %v (%.0f/s), %d failed", d, time.Since(t0).Round(time.Second), float64(d)/time.Since(t0).Seconds(), failed.Load())
			}
		}
	}()
	err := nsRun(r.PID, workers, func(w int) error {
		src := fmt.Sprintf("127.0.0.%d", 2+w%8)
		for {
			i := next.Add(1)
			if i > int64(total) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("time budget %v used up after %d connections", budget, done.Load())
			}
			if err := shortRequest(src, "127.0.0.1:80", int(i)); err != nil {
				failed.Add(1)
				mu.Lock()
				kinds[err.Error()]++
				if len(kinds) <= 5 && kinds[err.Error()] == 1 {
					t.Errorf("connection %d from %s: %v", i, src, err)
				}
				mu.Unlock()
			}
			done.Add(1)
		}
	})
	close(progress)
	elapsed := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d short connections in %v (%.0f/s), %d failed %v; shim CPU %v",
		done.Load(), elapsed.Round(time.Millisecond), float64(done.Load())/elapsed.Seconds(), failed.Load(), kinds, cpuTime(r.PID))
	var after shimFigures
	if !eventually(30*time.Second, 20*time.Millisecond, func() bool { after = measure(r.PID); return after.kinds["socket"] == idle.kinds["socket"] }) {
		t.Errorf("shim sockets %d, idle %d, 30s after the last connection", after.kinds["socket"], idle.kinds["socket"])
	}
	t.Logf("shim idle %v, after %v", idle, after)
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(30 * time.Second); code != 0 {
		t.Fatalf("shim exit %d after SIGTERM, want 0", code)
	}
}

// cpuTime is the user+system CPU time pid has used.
func cpuTime(pid int) time.Duration {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return time.Duration(st.UTime+st.STime) * time.Second / proc.ClockTick
}

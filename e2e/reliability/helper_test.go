package reliability

// The programs the shim supervises in these tests: this test binary in a
// role (internal/pid1test). Each prints one line per event on stdout (the
// tests' readiness signals and oracle, dumb-init's print_signals idea).
//
//	backend    stands in for convex-local-backend; REL_* variables below
//	upstream   a restartable server the backend runs as a child (REL_UPSTREAM)
//	kid        a process in the backend's tree (REL_KIND: obey, ignore,
//	           daemon, orphan); prints its pid and every signal it gets
//	daemonize  starts one kid (setsid for "daemon") and exits at once, so the
//	           kid is adopted by the shim
//	orphans    starts REL_ORPHANS short-lived processes through parents that
//	           exit at once (orphan-batch): a SIGCHLD flood for the shim
//	proxy      forward.Proxy in a process of its own; SIGUSR1 prints its
//	           goroutines
//	holder     does nothing until killed; it holds a network namespace
//
// The servers speak one line-based protocol; the first line picks the mode:
//
//	echo\n           answers ok\n, then echoes until EOF
//	req N\n          answers resp N\n and closes (a short connection)
//	stream SIZE SEED\n
//	                 both sides send SIZE bytes at once (stream below) and
//	                 verify what they receive byte for byte; the server then
//	                 sends "trailer sent=CRC recv=CRC exact=BOOL eof=BOOL".

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/convex-shim/convex-shim/forward"
	"github.com/convex-shim/convex-shim/internal/pid1test"
	"github.com/convex-shim/convex-shim/internal/sigdisp"
	"golang.org/x/sys/unix"
)

func helperMain(role string) {
	switch role {
	case "backend":
		backendMain()
	case "upstream":
		upstreamMain()
	case "kid":
		kidMain()
	case "daemonize":
		kind := os.Getenv("REL_KIND")
		cmd := self("kid", "REL_KIND="+kind)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: kind == "daemon"}
		if err := cmd.Start(); err != nil {
			fmt.Println("daemonize:", err)
			os.Exit(98)
		}
	case "orphans":
		orphansMain()
	case "orphan-batch":
		orphanBatchMain()
	case "proxy":
		proxyMain()
	case "holder":
		fmt.Println("holder ready")
		select {}
	default:
		fmt.Fprintf(os.Stderr, "unknown helper role %q\n", role)
		os.Exit(99)
	}
}

// self is this binary in another role, sharing stdout and stderr.
func self(role string, env ...string) *exec.Cmd { return pid1test.Self(role, env...) }

// backend stands in for convex-local-backend:
//
//	REL_LISTEN=addr[,addr]  serve the protocol there; prints "listening"
//	REL_UPSTREAM=addr       run the server in a child instead; SIGUSR1 stops
//	                        it gracefully ("upstream down"), SIGUSR2 starts a
//	                        new one ("upstream listening pid=N")
//	REL_KIDS=kind,...       start kids (see kidMain)
//	REL_PROXY=listen=target run forward.Proxy in a child (proxyMain)
//	REL_ORPHANS=N           start the orphans role ("orphans started K"), and
//	                        again on each SIGUSR2; "orphans spawned K" when its
//	                        shells are done
//	REL_EXIT=N              exit N once ready
//	REL_FILL_STDERR=N       write N bytes to stderr in the background
//	REL_ON_INT=ignore|second-exits   (default: exit 0 after a 50 ms drain)
//	REL_CRASH=exit:N|segv|abrt       crash that way on SIGHUP
func backendMain() {
	b := &pid1test.Backend{OnInt: os.Getenv("REL_ON_INT"), Drain: 50 * time.Millisecond, Exit: os.Getenv("REL_EXIT")}
	b.Listen()
	for _, kind := range list(os.Getenv("REL_KIDS")) {
		role := "kid"
		if kind == "daemon" || kind == "orphan" {
			role = "daemonize"
		}
		cmd := self(role, "REL_KIND="+kind)
		if err := cmd.Start(); err != nil {
			fmt.Println("backend: start kid:", err)
			os.Exit(98)
		}
		go cmd.Wait() // a well-behaved parent reaps its own children
	}
	if spec := os.Getenv("REL_PROXY"); spec != "" {
		listen, target, _ := strings.Cut(spec, "=")
		cmd := self("proxy", "REL_PROXY_LISTEN="+listen, "REL_PROXY_TARGET="+target)
		if err := cmd.Start(); err != nil {
			fmt.Println("backend: start proxy:", err)
			os.Exit(98)
		}
		go cmd.Wait()
	}
	floods := 0
	flood := func() {
		floods++
		k := floods
		cmd := self("orphans")
		if err := cmd.Start(); err != nil {
			fmt.Println("backend: orphans:", err)
			os.Exit(98)
		}
		fmt.Println("orphans started", k)
		go func() {
			cmd.Wait()
			fmt.Println("orphans spawned", k)
		}()
	}
	if os.Getenv("REL_ORPHANS") != "" {
		flood()
	}
	for _, addr := range list(os.Getenv("REL_LISTEN")) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Println("backend: listen:", err)
			os.Exit(97)
		}
		go serve(ln, nil)
	}
	if addrs := os.Getenv("REL_LISTEN"); addrs != "" {
		fmt.Println("listening", addrs)
	}
	var up *exec.Cmd
	startUpstream := func() {
		up = self("upstream", "REL_ADDR="+os.Getenv("REL_UPSTREAM"))
		if err := up.Start(); err != nil {
			fmt.Println("backend: start upstream:", err)
			os.Exit(98)
		}
	}
	if os.Getenv("REL_UPSTREAM") != "" {
		startUpstream()
	}
	if n, _ := strconv.Atoi(os.Getenv("REL_FILL_STDERR")); n > 0 {
		// Blocks once the pipe is full and nobody reads it.
		go os.Stderr.Write(bytes.Repeat([]byte("backend noise\n"), n/14+1))
	}
	b.Other = func(sig unix.Signal) {
		switch sig {
		case unix.SIGHUP:
			if mode := os.Getenv("REL_CRASH"); mode != "" {
				crash(mode)
			}
		case unix.SIGUSR1:
			if up != nil {
				up.Process.Signal(unix.SIGTERM)
				up.Wait()
				fmt.Println("upstream down")
			}
		case unix.SIGUSR2:
			if os.Getenv("REL_UPSTREAM") != "" {
				startUpstream()
			}
			if os.Getenv("REL_ORPHANS") != "" {
				flood()
			}
		}
	}
	b.Serve()
}

var nilPointer *int // a package variable, so the compiler cannot see it is nil

// crash ends the backend the way a real one can crash.
func crash(mode string) {
	fmt.Println("crashing", mode)
	switch {
	case strings.HasPrefix(mode, "exit:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(mode, "exit:"))
		os.Exit(n)
	case mode == "segv":
		// A real segmentation fault with the default action, as a C or Rust
		// program dies of one: take SIGSEGV back from the Go runtime first.
		if err := sigdisp.Set(unix.SIGSEGV, sigdisp.Default); err != nil {
			fmt.Println(err)
			os.Exit(96)
		}
		*nilPointer = 1
	case mode == "abrt":
		// Rust's release builds abort on panic; Go does the same with
		// GOTRACEBACK=crash: the traceback, then SIGABRT.
		debug.SetTraceback("crash")
		panic("backend panic (abort)")
	}
	fmt.Println("unknown crash mode", mode)
	os.Exit(96)
}

// upstream serves on REL_ADDR until SIGTERM, then closes gracefully: no new
// connections, a FIN on every open one after what it already echoed, and
// exit once the clients have closed (at most 5 s).
func upstreamMain() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM)
	ln, err := net.Listen("tcp", os.Getenv("REL_ADDR"))
	if err != nil {
		fmt.Println("upstream: listen:", err)
		os.Exit(97)
	}
	conns := &connSet{m: map[net.Conn]bool{}}
	go serve(ln, conns)
	fmt.Printf("upstream listening pid=%d\n", os.Getpid())
	<-sigs
	ln.Close()
	n := conns.closeWrite()
	conns.wg.Wait()
	fmt.Printf("upstream closed %d connections\n", n)
	os.Exit(0)
}

// connSet tracks open server connections for a graceful close.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]bool
	wg sync.WaitGroup
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	s.m[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *connSet) closeWrite() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		c.(*net.TCPConn).CloseWrite()
	}
	return len(s.m)
}

func serve(ln net.Listener, conns *connSet) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if conns != nil {
			conns.add(c)
		}
		go func() {
			defer c.Close()
			if conns != nil {
				defer conns.remove(c)
			}
			serveConn(c)
		}()
	}
}

func serveConn(c net.Conn) {
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "echo":
		io.WriteString(c, "ok\n")
		// Through a small buffer, as the Rust backend copies: io.Copy
		// between TCP connections would splice and hold a pipe (two more
		// descriptors) per connection, and the held-connection tests would
		// measure this backend's limit instead of the shim's.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{br}, make([]byte, 4<<10))
	case len(f) == 2 && f[0] == "req":
		io.WriteString(c, "resp "+f[1]+"\n")
	case len(f) == 3 && f[0] == "stream":
		size, _ := strconv.ParseInt(f[1], 10, 64)
		seed, _ := strconv.ParseUint(f[2], 10, 64)
		sent := make(chan uint32, 1)
		go func() {
			crc, _ := sendStream(c, size, seed^downKey)
			sent <- crc
		}()
		recv, exact, _ := recvStream(br, size, seed)
		_, err := br.ReadByte()
		eof := err == io.EOF
		fmt.Fprintf(c, "trailer sent=%08x recv=%08x exact=%v eof=%v\n", <-sent, recv, exact, eof)
	default:
		io.WriteString(c, "bad request\n")
	}
}

// kid is a process in the backend's tree. kinds:
//
//	obey    a child of the backend; exits on SIGTERM (the Node server)
//	ignore  a child of the backend that ignores SIGTERM
//	daemon  setsid, adopted by the shim, ignores SIGTERM
//	orphan  adopted by the shim (its parent exited); exits on SIGTERM
func kidMain() {
	kind := os.Getenv("REL_KIND")
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, pid1test.Observed...)
	pid := os.Getpid()
	sid, _ := unix.Getsid(0)
	fmt.Printf("kid %s pid=%d pgid=%d sid=%d\n", kind, pid, unix.Getpgrp(), sid)
	for sig := range sigs {
		fmt.Printf("kid %s pid=%d got %s\n", kind, pid, unix.SignalName(sig.(unix.Signal)))
		switch sig {
		case unix.SIGTERM:
			if kind == "obey" || kind == "orphan" {
				os.Exit(128 + 15)
			}
		case unix.SIGINT:
			os.Exit(128 + 2)
		}
	}
}

// orphans starts REL_ORPHANS processes that live 300-600 ms and exits
// without waiting for them, so the shim adopts them while they run (or as
// zombies, if one beats its parent) and each one's exit is a SIGCHLD for it.
// Batches of 250 are started in parallel by processes of their own (role
// orphan-batch) that never wait, so nothing but the shim reaps an orphan.
func orphansMain() {
	n, _ := strconv.Atoi(os.Getenv("REL_ORPHANS"))
	const batch = 250
	var batches []*exec.Cmd
	for i := 0; i < n; i += batch {
		cmd := self("orphan-batch", "REL_BATCH="+strconv.Itoa(min(batch, n-i)))
		if err := cmd.Start(); err != nil {
			fmt.Println("orphans: start batch:", err)
			os.Exit(98)
		}
		batches = append(batches, cmd)
	}
	for _, cmd := range batches {
		if err := cmd.Wait(); err != nil {
			fmt.Println("orphans: batch:", err)
			os.Exit(98)
		}
	}
	os.Exit(0)
}

func orphanBatchMain() {
	n, _ := strconv.Atoi(os.Getenv("REL_BATCH"))
	for i := range n {
		d := fmt.Sprintf("0.%d", 300+(i*7)%300)
		if _, err := syscall.ForkExec("/bin/sleep", []string{"sleep", d}, &syscall.ProcAttr{Env: os.Environ()}); err != nil {
			fmt.Println("orphan-batch: fork:", err)
			os.Exit(98)
		}
	}
	os.Exit(0)
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// --- the verified byte stream -------------------------------------------

// A stream is a sequence of 64 KiB chunks cut from a 16 MiB random pool at
// offsets drawn from PCG(seed): cheap to send (no generation per byte) and
// checkable byte for byte by a receiver that knows the seed.
const (
	poolSize  = 16 << 20
	chunkSize = 64 << 10
	downKey   = 0x9e3779b97f4a7c15 // the server's stream seed is seed^downKey
)

var (
	poolOnce  sync.Once
	pool      []byte
	castagnol = crc32.MakeTable(crc32.Castagnoli)
)

func streamPool() []byte {
	poolOnce.Do(func() {
		pool = make([]byte, poolSize)
		rand.NewChaCha8([32]byte{'c', 'o', 'n', 'v', 'e', 'x'}).Read(pool)
	})
	return pool
}

type chunker struct {
	rng  *rand.PCG
	left int64
}

func newChunker(size int64, seed uint64) *chunker {
	return &chunker{rng: rand.NewPCG(seed, seed^0x5851f42d4c957f2d), left: size}
}

// next returns the next chunk, or nil at the end.
func (c *chunker) next() []byte {
	if c.left <= 0 {
		return nil
	}
	n := int64(chunkSize)
	if c.left < n {
		n = c.left
	}
	c.left -= n
	off := c.rng.Uint64() % uint64(poolSize-chunkSize)
	return streamPool()[off : off+uint64(n)]
}

// sendStream writes the stream and returns the CRC-32C of what it wrote.
func sendStream(w io.Writer, size int64, seed uint64) (uint32, error) {
	ch := newChunker(size, seed)
	var crc uint32
	for b := ch.next(); b != nil; b = ch.next() {
		if _, err := w.Write(b); err != nil {
			return crc, err
		}
		crc = crc32.Update(crc, castagnol, b)
	}
	return crc, nil
}

// recvStream reads size bytes, compares each with the stream seed names,
// and returns the CRC-32C of what it read and whether every byte matched.
func recvStream(r io.Reader, size int64, seed uint64) (uint32, bool, error) {
	ch := newChunker(size, seed)
	buf := make([]byte, chunkSize)
	var crc uint32
	exact := true
	for want := ch.next(); want != nil; want = ch.next() {
		got := buf[:len(want)]
		if _, err := io.ReadFull(r, got); err != nil {
			return crc, false, err
		}
		crc = crc32.Update(crc, castagnol, got)
		if exact && !bytes.Equal(got, want) {
			exact = false
		}
	}
	return crc, exact, nil
}

// proxy runs the shim's forward.Proxy from REL_PROXY_LISTEN to
// REL_PROXY_TARGET. On each SIGUSR1 it prints its goroutine count and how
// many of them are in the proxy's event loop.
func proxyMain() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGUSR1)
	p := &forward.Proxy{Listen: os.Getenv("REL_PROXY_LISTEN"), Target: os.Getenv("REL_PROXY_TARGET"), Log: log.New(os.Stderr, "proxy: ", 0)}
	if err := p.Start(); err != nil {
		fmt.Println("proxy:", err)
		os.Exit(97)
	}
	fmt.Printf("proxy listening pid=%d\n", os.Getpid())
	buf := make([]byte, 64<<20)
	for seq := 1; ; seq++ {
		<-sigs
		total := runtime.NumGoroutine()
		dump := buf[:runtime.Stack(buf, true)]
		fmt.Printf("proxy seq=%d goroutines=%d loop=%d\n", seq, total,
			bytes.Count(dump, []byte("forward.(*loop).run(")))
	}
}

package main

// The test binary doubles as the programs the shim supervises (the os/exec
// helper-process pattern): with SHIM_HELPER set, TestMain runs a role here
// instead of the tests. Each role prints one line per event to stdout; the
// tests read those lines as their readiness signals and as the oracle
// (dumb-init's print_signals idea: every signal a process receives is a line).

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/convex-shim/convex-shim/internal/sigdisp"
	"golang.org/x/sys/unix"
)

// observed are the signals a helper records. SIGTERM and SIGINT are
// recorded and then acted on as the role says.
var observed = []os.Signal{
	unix.SIGINT, unix.SIGTERM, unix.SIGQUIT, unix.SIGHUP, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGWINCH, unix.SIGALRM, unix.SIGPWR,
}

func helperMain(role string) {
	switch role {
	case "backend":
		backend()
	case "grandchild":
		grandchild()
	case "orphan-parent":
		// Start children and exit without waiting: they become orphans.
		n, _ := strconv.Atoi(os.Getenv("HELPER_ORPHANS"))
		for range n {
			spawn("short", nil)
		}
		os.Exit(0)
	case "short":
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown helper role %q\n", role)
		os.Exit(99)
	}
}

// spawn starts this binary in another role, in the caller's process group.
func spawn(role string, stdout io.Writer) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SHIM_HELPER="+role)
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Println("helper: start", role+":", err)
		os.Exit(98)
	}
	return cmd
}

// backend stands in for convex-local-backend. HELPER_* variables select
// what it does; see the tests.
func backend() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, observed...)

	if os.Getenv("HELPER_GRANDCHILD") != "" {
		// Like the Node server: a long-lived child in the backend's group.
		// It prints "grandchild ready" itself; the tests wait for both.
		spawn("grandchild", os.Stdout)
	}
	if n := os.Getenv("HELPER_ORPHANS"); n != "" {
		p := spawn("orphan-parent", os.Stdout)
		p.Wait()
		fmt.Println("orphans spawned", n)
	}
	if urls := os.Getenv("HELPER_CALLBACK"); urls != "" {
		// Like Node actions calling back, possibly before the backend listens.
		for _, url := range strings.Split(urls, ",") {
			go callback(url)
		}
	}
	if addr := os.Getenv("HELPER_LISTEN"); addr != "" {
		if d, err := time.ParseDuration(os.Getenv("HELPER_LISTEN_DELAY")); err == nil {
			time.Sleep(d)
		}
		for _, a := range strings.Split(addr, ",") {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				fmt.Println("listen:", err)
				os.Exit(97)
			}
			go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "unknown via %s", a)
			}))
		}
		fmt.Println("listening", addr)
	}
	fmt.Printf("ready pid=%d pgid=%d\n", os.Getpid(), unix.Getpgrp())
	if code := os.Getenv("HELPER_EXIT"); code != "" {
		n, _ := strconv.Atoi(code)
		os.Exit(n)
	}

	ints := 0
	for sig := range sigs {
		fmt.Println("backend got", unix.SignalName(sig.(unix.Signal)))
		switch sig {
		case unix.SIGTERM:
			os.Exit(128 + 15) // what the default action would report
		case unix.SIGINT:
			ints++
			switch os.Getenv("HELPER_ON_INT") {
			case "ignore":
			case "second-exits": // Convex: the second SIGINT forces an exit
				if ints == 2 {
					os.Exit(1)
				}
			default: // drain briefly, then exit cleanly
				time.Sleep(100 * time.Millisecond)
				os.Exit(0)
			}
		}
	}
}

func grandchild() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, observed...)
	fmt.Println("grandchild ready")
	for sig := range sigs {
		fmt.Println("grandchild got", unix.SignalName(sig.(unix.Signal)))
		if sig == unix.SIGTERM || sig == unix.SIGINT {
			os.Exit(128 + int(sig.(unix.Signal)))
		}
	}
}

func callback(url string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Printf("callback %s error: %v\n", url, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("callback %s: %d %s\n", url, resp.StatusCode, body)
}

// execIgnoring sets the listed signals to SIG_IGN, blocks those in
// SHIM_EXEC_BLOCKING, and execs os.Args[1:], as a parent that ignores or
// blocks signals (nohup, some CI runners) would start the shim.
func execIgnoring(list string) {
	runtime.LockOSThread() // the mask is per thread; execve keeps this one's
	var block uint64
	for _, f := range strings.Split(os.Getenv("SHIM_EXEC_BLOCKING"), ",") {
		if n, err := strconv.Atoi(f); err == nil {
			block |= 1 << (n - 1)
		}
	}
	if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, uintptr(unsafe.Pointer(&block)), 0, 8, 0, 0); errno != 0 {
		fmt.Fprintf(os.Stderr, "block signals: %v\n", errno)
		os.Exit(96)
	}
	for _, f := range strings.Split(list, ",") {
		n, _ := strconv.Atoi(f)
		if err := sigdisp.Set(unix.Signal(n), sigdisp.Ignore); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(96)
		}
	}
	os.Unsetenv("SHIM_EXEC_IGNORING")
	os.Unsetenv("SHIM_EXEC_BLOCKING")
	err := unix.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", os.Args[1], err)
	os.Exit(95)
}

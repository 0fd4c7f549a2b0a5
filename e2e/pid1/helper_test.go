package pid1

// The programs the shim supervises in these tests: this test binary in a
// role (see internal/pid1test). Each role prints one line per event to
// stdout; the tests read those lines as their readiness signals and as the
// oracle.

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"golang.org/x/sys/unix"
)

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
	cmd := pid1test.Self(role)
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		fmt.Println("helper: start", role+":", err)
		os.Exit(98)
	}
	return cmd
}

// backend stands in for convex-local-backend. HELPER_* variables select
// what it does; see the tests.
func backend() {
	b := &pid1test.Backend{OnInt: os.Getenv("HELPER_ON_INT"), Drain: 100 * time.Millisecond, Exit: os.Getenv("HELPER_EXIT")}
	b.Listen()

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
	b.Serve()
}

func grandchild() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, pid1test.Observed...)
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

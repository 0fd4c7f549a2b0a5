package reliability

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"golang.org/x/sys/unix"
)

// The upstream (the backend's port 3210) restarts while connections are
// open: each open one ends cleanly (every byte echoed, then EOF, no reset),
// and connections made while nothing listens are held by the shim and
// answered once the upstream is back, none reset. Two ways down: a graceful
// stop, and SIGKILL (then an open connection may see a reset: the kernel's
// choice for a killed process's sockets; it must end, not hang).
func TestUpstreamRestart(t *testing.T) {
	for _, how := range []string{"graceful", "killed"} {
		t.Run(how, func(t *testing.T) {
			const open, during = 100, 50
			r := start(t, opts{PID1: true, Env: []string{"REL_UPSTREAM=127.0.0.1:3210"}})
			var upPid int
			fmt.Sscanf(r.Line("upstream listening pid="), "upstream listening pid=%d", &upPid)
			conns, err := openHeld(r.PID, open, "127.0.0.1:80")
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(conns)

			// Take the upstream down and watch every open connection end.
			if how == "graceful" {
				if err := r.Signal(syscall.SIGUSR1); err != nil {
					t.Fatal(err)
				}
			} else {
				host := hostPID(r.PID, upPid)
				if host < 0 {
					t.Fatalf("upstream pid %d not found in the shim's PID namespace", upPid)
				}
				if err := unix.Kill(host, unix.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			var ended sync.WaitGroup
			var mu sync.Mutex
			endings := map[string]int{}
			for _, c := range conns {
				ended.Add(1)
				go func() {
					defer ended.Done()
					c.SetReadDeadline(time.Now().Add(20 * time.Second))
					b, err := io.ReadAll(c)
					how := "EOF"
					switch {
					case errors.Is(err, syscall.ECONNRESET):
						how = "reset"
					case err != nil:
						how = err.Error()
					}
					if len(b) > 0 {
						how += fmt.Sprintf(" after %q", b)
					}
					mu.Lock()
					endings[how]++
					mu.Unlock()
					c.Close()
				}()
			}
			ended.Wait()
			t.Logf("upstream %s: the %d open connections ended: %v", how, open, endings)
			if how == "graceful" && endings["EOF"] != open {
				t.Errorf("want all %d open connections to end with a clean EOF, got %v", open, endings)
			}
			if how == "killed" && endings["EOF"]+endings["reset"] != open {
				t.Errorf("want all %d open connections to end (EOF or reset), got %v", open, endings)
			}
			if how == "graceful" {
				r.Line("upstream down")
			}

			// Nothing listens on 3210 now. New connections are accepted and
			// held: no answer, no EOF, no reset.
			type result struct {
				err  error
				when time.Time
			}
			results := make(chan result, during)
			var ready sync.WaitGroup
			ready.Add(during)
			go nsRun(r.PID, during, func(int) error {
				c, err := dialFrom("", "127.0.0.1:80", 10*time.Second)
				if err != nil {
					ready.Done()
					results <- result{err: fmt.Errorf("dial during the restart: %w", err)}
					return nil
				}
				defer c.Close()
				_, err = io.WriteString(c, "echo\nping\n")
				ready.Done()
				if err == nil {
					err = echoRoundTrip(c, "", "ok\nping\n")
				}
				results <- result{err, time.Now()}
				return nil
			})
			ready.Wait()
			down := time.Now()
			// The restart takes a while; during it the connections must stay held.
			select {
			case res := <-results:
				t.Fatalf("a connection made while the upstream was down ended before it came back: %v", res.err)
			case <-time.After(time.Second):
			}
			if err := r.Signal(syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			r.Stdout.WaitFor(30*time.Second, func(l string) bool {
				return strings.HasPrefix(l, "upstream listening pid=") && l != fmt.Sprintf("upstream listening pid=%d", upPid)
			})
			up := time.Now()
			var last time.Time
			for range during {
				res := <-results
				if res.err != nil {
					t.Errorf("connection made during the restart: %v", res.err)
				}
				if res.when.After(last) {
					last = res.when
				}
			}
			t.Logf("%d connections made while the upstream was down were held %v and all answered %v after it came back",
				during, up.Sub(down).Round(time.Millisecond), last.Sub(up).Round(time.Millisecond))
			if s := r.Stderr.String(); strings.Contains(s, "giving up") {
				t.Errorf("the shim gave up on a client:\n%s", s)
			}
			if err := r.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := r.Wait(30 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM, want 0", code)
			}
		})
	}
}

var retryIn = regexp.MustCompile(`forward: accept on 127\.0\.0\.1:80: .*too many open files; retrying in (\S+)$`)

// Descriptors run out (the shim's RLIMIT_NOFILE lowered while it runs, as
// prlimit(1) does): accept errors are logged with backoff, not in a loop;
// the shim and the backend stay up; connections waiting in the listen
// backlog are served once descriptors free up, and so are new ones.
func TestFDExhaustion(t *testing.T) {
	const base, pending = 40, 20
	r := start(t, opts{PID1: true, Env: []string{"REL_LISTEN=127.0.0.1:3210"}})
	r.Line("listening")
	var backendPid int
	fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backendPid)
	conns, err := openHeld(r.PID, base, "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)

	var old unix.Rlimit
	if err := unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	used := fdCount(r.PID)
	low := unix.Rlimit{Cur: uint64(used + 3), Max: old.Max}
	if err := unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatalf("prlimit(%d, RLIMIT_NOFILE, %d): %v", r.PID, low.Cur, err)
	}
	t.Logf("shim uses %d descriptors with %d connections; RLIMIT_NOFILE lowered from %d to %d", used, base, old.Cur, low.Cur)

	// More clients than descriptors: the kernel completes their handshakes
	// (the listen backlog), the shim cannot accept them all.
	results := make(chan error, pending)
	pend := make([]net.Conn, pending)
	go nsRun(r.PID, pending, func(i int) error {
		c, err := dialFrom("", "127.0.0.1:80", 10*time.Second)
		if err != nil {
			results <- fmt.Errorf("dial: %w", err)
			return nil
		}
		pend[i] = c
		results <- echoRoundTrip(c, "echo\nping\n", "ok\nping\n")
		return nil
	})
	defer func() { closeAll(pend) }()
	t0 := time.Now()
	r.LogLine("too many open files; retrying in 1s", 30*time.Second)
	exhausted := time.Now()
	// Stay exhausted a few seconds more: the backoff must hold at 1s.
	time.Sleep(3 * time.Second)
	var delays []string
	for _, l := range r.Stderr.All() {
		if m := retryIn.FindStringSubmatch(l); m != nil {
			delays = append(delays, m[1])
		}
	}
	period := time.Since(t0)
	t.Logf("%v out of descriptors: %d accept errors logged, retry delays %v", period.Round(time.Millisecond), len(delays), delays)
	// Each failure doubles the delay from 5ms up to 1s; a successful accept
	// (a descriptor freed by a failed dial) starts again at 5ms.
	prev := time.Duration(0)
	for _, s := range delays {
		d, err := time.ParseDuration(s)
		if err != nil || (d != min(max(2*prev, 5*time.Millisecond), time.Second) && d != 5*time.Millisecond) {
			t.Errorf("retry delay %s after %v: not the documented backoff", s, prev)
		}
		prev = d
	}
	if limit := 2*9 + int(period.Seconds()) + 2; len(delays) > limit {
		t.Errorf("%d accept errors logged in %v: not backing off (want at most %d)", len(delays), period, limit)
	}
	if r.Exited() || procState(backendPidHost(t, r, backendPid)) == "" {
		t.Fatalf("the shim or the backend did not stay up (shim exited: %v)", r.Exited())
	}
	answered := 0
	for len(results) > 0 {
		if err := <-results; err != nil {
			t.Errorf("a client failed while descriptors were exhausted: %v", err)
		}
		answered++
	}
	t.Logf("%d of %d pending clients answered while exhausted (the last descriptors); the rest wait in the backlog", answered, pending)

	// Free descriptors: the first connections close.
	freed := time.Now()
	closeAll(conns)
	for range pending - answered {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("pending client after descriptors freed: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("pending clients not served 30s after descriptors were freed")
		}
	}
	t.Logf("all %d pending clients answered %v after descriptors were freed (exhausted at %v)", pending, time.Since(freed).Round(time.Millisecond), exhausted.Sub(t0).Round(time.Millisecond))
	closeAll(pend)
	if err := unix.Prlimit(r.PID, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	more, err := openHeld(r.PID, 100, "127.0.0.1:80")
	if err != nil {
		t.Fatalf("after the limit was restored: %v", err)
	}
	closeAll(more)
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}

func backendPidHost(t *testing.T, r *pid1test.Instance, nsPid int) int {
	t.Helper()
	return hostPID(r.PID, nsPid)
}

// kid is one process of the backend's tree, as it reported itself.
type kid struct {
	kind           string
	pid, pgid, sid int // as seen in the shim's PID namespace
	host           int // host pid
	start          uint64
}

func waitKids(t *testing.T, r *pid1test.Instance, pid1 bool, kinds []string) []*kid {
	t.Helper()
	var kids []*kid
	for i := range kinds {
		n := 0
		l, ok := r.Stdout.WaitFor(30*time.Second, func(l string) bool {
			if strings.HasPrefix(l, "kid ") && !strings.Contains(l, " got ") {
				n++
				return n == i+1
			}
			return false
		})
		if !ok {
			t.Fatalf("kid %d of %v did not report", i+1, kinds)
		}
		k := &kid{}
		fmt.Sscanf(l, "kid %s pid=%d pgid=%d sid=%d", &k.kind, &k.pid, &k.pgid, &k.sid)
		k.host = k.pid
		if pid1 {
			k.host = hostPID(r.PID, k.pid)
		}
		k.start = startTime(k.host)
		kids = append(kids, k)
	}
	return kids
}

// The backend ends in every way it can (a clean stop, an exit code, a real
// SIGSEGV, a Rust-style abort), with a tree below it: a child in its group
// that exits on SIGTERM (the Node server), a child that ignores SIGTERM, a
// setsid daemon adopted by the shim that ignores SIGTERM, and two adopted
// orphans, one of them SIGKILLed by the test first. As PID 1 and as a
// subreaper the shim must reap the SIGKILLed one at once, exit promptly with
// the right status, and reap every other process before it exits (its -v log
// names each pid); as a subreaper, none may still run afterwards.
func TestBackendCrashAndLeftovers(t *testing.T) {
	const cleanupGrace = 500 * time.Millisecond
	kinds := []string{"obey", "ignore", "daemon", "orphan", "orphan"}
	for _, mode := range []struct {
		name, crash string
		want        int
	}{
		{"stop", "", 0},
		{"exit3", "exit:3", 3},
		{"SIGSEGV", "segv", 128 + 11},
		{"SIGABRT", "abrt", 128 + 6},
	} {
		for _, pid1 := range []bool{true, false} {
			name := mode.name + "/subreaper"
			if pid1 {
				name = mode.name + "/pid1"
			}
			t.Run(name, func(t *testing.T) {
				r := start(t, opts{PID1: pid1, NoNet: true,
					Args: []string{"--forward", "off", "-v", "--cleanup-grace", cleanupGrace.String()},
					Env:  []string{"REL_KIDS=" + strings.Join(kinds, ","), "REL_CRASH=" + mode.crash, "GOTRACEBACK=single"}})
				var backend int
				fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backend)
				kids := waitKids(t, r, pid1, kinds)
				byKind := map[string][]*kid{}
				for _, k := range kids {
					byKind[k.kind] = append(byKind[k.kind], k)
				}
				if k := byKind["obey"][0]; k.pgid != backend {
					t.Errorf("the Node-server kid is in group %d, not the backend's %d", k.pgid, backend)
				}
				if k := byKind["daemon"][0]; k.sid != k.pid {
					t.Errorf("the daemon did not get a session of its own: sid %d, pid %d", k.sid, k.pid)
				}
				for _, k := range append(byKind["daemon"], byKind["orphan"]...) {
					if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return ppidOf(k.host) == r.PID }) {
						t.Fatalf("%s kid %d was not adopted by the shim (ppid %d)", k.kind, k.pid, ppidOf(k.host))
					}
				}

				// A grandchild is SIGKILLed: the shim reaps it at once.
				victim := byKind["orphan"][0]
				if err := unix.Kill(victim.host, unix.SIGKILL); err != nil {
					t.Fatal(err)
				}
				r.LogLine(fmt.Sprintf("reaped pid %d: killed by SIGKILL", victim.pid), 10*time.Second)
				if z := zombiesOf(r.PID); z != 0 {
					t.Errorf("%d zombies under the shim after the SIGKILLed grandchild", z)
				}

				var t0 time.Time
				if mode.crash == "" {
					if err := r.Signal(syscall.SIGTERM); err != nil {
						t.Fatal(err)
					}
					r.Line("backend got SIGINT")
				} else {
					if err := r.Signal(syscall.SIGHUP); err != nil {
						t.Fatal(err)
					}
					r.Line("crashing " + mode.crash)
				}
				t0 = time.Now()
				code := r.Wait(30 * time.Second)
				took := r.ExitedAt.Sub(t0)
				if code != mode.want {
					t.Errorf("shim exit %d, want %d", code, mode.want)
				}
				// The SIGTERM-ignoring kids hold the shim for cleanup-grace,
				// then SIGKILL; allow scheduling slack on a loaded machine.
				if took > cleanupGrace+3*time.Second {
					t.Errorf("shim took %v to exit after the backend ended (cleanup grace %v)", took, cleanupGrace)
				}
				var terms []string // SIGTERMs each leftover saw
				log := r.Stderr.String()
				if !strings.Contains(log, fmt.Sprintf("leftover processes still running %v after the backend exited; sending SIGKILL", cleanupGrace)) {
					t.Errorf("no SIGKILL round for the SIGTERM-ignoring leftovers")
				}
				for _, k := range kids {
					if !regexp.MustCompile(fmt.Sprintf(`reaped pid %d: `, k.pid)).MatchString(log) {
						t.Errorf("%s kid pid %d was not reaped by the shim", k.kind, k.pid)
					}
					if k != victim {
						n := r.CountLines(fmt.Sprintf("kid %s pid=%d got SIGTERM", k.kind, k.pid))
						if n != 1 {
							// Once: a second SIGTERM is "force quit" to many programs.
							t.Errorf("%s kid pid %d got %d SIGTERMs before the SIGKILL, want exactly 1", k.kind, k.pid, n)
						}
						terms = append(terms, fmt.Sprintf("%s:%d", k.kind, n))
					}
					if !pid1 && alive(k.host, k.start) {
						t.Errorf("%s kid pid %d outlived the shim", k.kind, k.pid)
					}
				}
				if left := pid1test.Tagged(r.Tag); len(left) > 0 {
					t.Errorf("processes of this run still alive after the shim exited: %v", left)
				}
				t.Logf("exit %d %v after the backend ended; %d kids reaped (1 SIGKILLed early, %d SIGKILLed after %v), none left; SIGTERMs seen %v",
					code, took.Round(time.Millisecond), len(kids), strings.Count(log, "killed by SIGKILL")-1, cleanupGrace, terms)
			})
		}
	}
}

// 1,000 SIGTERMs as fast as the kernel takes them. Standard signals
// coalesce (in the kernel while pending, and in the Go runtime's signal
// mask until its signal goroutine runs), so the shim sees some number k of
// stop requests, from 1 up, and the documented policy for k is exact: the
// 1st and 2nd each send one SIGINT to the backend's pid (which may itself
// coalesce them into one), the 3rd and later SIGKILL its process group (so
// fast behind the SIGINTs that the backend may die before its handler sees
// one), and if k < 3 the grace period does. The backend here ignores
// SIGINT, so only SIGKILL ends it: exit 137, and its group (a Node-server
// kid) never sees SIGINT or SIGTERM.
func TestSIGTERMStorm(t *testing.T) {
	const grace = 2 * time.Second
	runs := scale(20, 200)
	ks := map[int]int{}
	sigints := map[int]int{}
	var sentTotal int
	for run := range runs {
		r := start(t, opts{PID1: true, NoNet: true, Args: []string{"--forward", "off", "--grace", grace.String()},
			Env: []string{"REL_ON_INT=ignore", "REL_KIDS=obey"}})
		r.Line("ready ")
		r.Line("kid obey")
		sent := 0
		for range 1000 {
			if err := r.Signal(syscall.SIGTERM); err != nil {
				break // the shim is gone: the storm outlived it
			}
			sent++
		}
		sentTotal += sent
		code := r.Wait(30 * time.Second)
		if code != 137 {
			t.Errorf("run %d: exit %d, want 137", run, code)
		}
		log := r.Stderr.All()
		k := 0
		for _, l := range log {
			if !strings.Contains(l, "(stop request ") {
				continue
			}
			k++
			want := fmt.Sprintf("(stop request %d); sending SIGINT to the backend", k)
			if k >= 3 {
				want = fmt.Sprintf("(stop request %d); sending SIGKILL to the backend's process group", k)
			}
			if !strings.Contains(l, want) {
				t.Errorf("run %d: stop request %d logged %q, want %q", run, k, l, want)
			}
		}
		graceKill := r.Stderr.Count(func(l string) bool { return strings.Contains(l, "after the stop request; sending SIGKILL") })
		if (k < 3) != (graceKill == 1) || graceKill > 1 {
			t.Errorf("run %d: %d stop requests seen and %d grace SIGKILLs logged; want the grace SIGKILL exactly when fewer than 3", run, k, graceKill)
		}
		// A SIGKILL right behind a SIGINT may end the backend before its
		// handler runs; with the grace period it has 2 s to see it.
		n := r.CountLines("backend got SIGINT")
		low := 0
		if k < 3 {
			low = 1
		}
		if n < low || n > min(k, 2) {
			t.Errorf("run %d: the backend got %d SIGINTs for %d stop requests, want %d to %d", run, n, k, low, min(k, 2))
		}
		for _, l := range r.Stdout.All() {
			if strings.Contains(l, " got ") && l != "backend got SIGINT" {
				t.Errorf("run %d: unexpected %q", run, l)
			}
		}
		ks[k]++
		sigints[n]++
		if t.Failed() {
			return
		}
	}
	t.Logf("%d runs of 1,000 SIGTERMs (%d accepted by the kernel before the shim was gone): exit 137 every time; stop requests seen per run %v; SIGINTs the backend saw per run %v",
		runs, sentTotal, histogram(ks), histogram(sigints))
}

func histogram(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d:%d runs", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Thousands of short-lived orphans, each adopted by the shim and each
// exiting with a SIGCHLD of its own. All are reaped (none left a zombie),
// signals the backend should get still arrive exactly once each during the
// flood, and a stop request in the middle of a second flood is still
// exactly one SIGINT and a clean exit.
func TestSIGCHLDFlood(t *testing.T) {
	n := scale(5000, 20000)
	for _, pid1 := range []bool{true, false} {
		name := "subreaper"
		if pid1 {
			name = "pid1"
		}
		t.Run(name, func(t *testing.T) {
			r := start(t, opts{PID1: pid1, NoNet: true, Args: []string{"--forward", "off", "-v"},
				Env: []string{"REL_ORPHANS=" + strconv.Itoa(n)}})
			r.Line("ready ")
			t0 := time.Now()
			r.LogLine("reaped pid", 30*time.Second) // the flood has begun
			for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGHUP, syscall.SIGALRM, syscall.SIGPWR} {
				if err := r.Signal(sig); err != nil {
					t.Fatal(err)
				}
				r.Line("backend got " + unix.SignalName(sig))
			}
			r.LineWithin("orphans spawned 1", scale(60*time.Second, 240*time.Second))
			// Done when the backend is the shim's only child left.
			var kids map[int]string
			if !eventually(60*time.Second, 10*time.Millisecond, func() bool { kids = childrenOf(r.PID); return len(kids) == 1 }) {
				t.Fatalf("60s after the flood the shim still has %d children (%d zombies)", len(kids), zombiesOf(r.PID))
			}
			took := time.Since(t0)
			reaped := r.Stderr.Count(func(l string) bool { return strings.Contains(l, "reaped pid") })
			t.Logf("%d orphans adopted and reaped in %v (%d reaped lines), no zombie left", n, took.Round(time.Millisecond), reaped)
			if reaped != n {
				t.Errorf("the shim reaped %d processes, want the %d orphans", reaped, n)
			}

			// Second flood, and a stop request in the middle of it.
			if err := r.Signal(syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			r.Line("orphans started 2")
			r.WaitLogCount("reaped pid", reaped+100, 30*time.Second)
			if err := r.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := r.Wait(30 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM during the flood, want 0", code)
			}
			for _, s := range []string{"SIGUSR1", "SIGWINCH", "SIGHUP", "SIGALRM", "SIGPWR", "SIGINT"} {
				if got := r.CountLines("backend got " + s); got != 1 {
					t.Errorf("backend got %s %d times, want once", s, got)
				}
			}
			if left := pid1test.Tagged(r.Tag); len(left) > 0 {
				t.Errorf("processes of this run still alive after the shim exited: %v", left)
			}
		})
	}
}

// catatonit's issue #4: the main child's exit coalesces with orphans' in one
// SIGCHLD. Each run's backend starts orphans that exit with another code just
// as it exits itself; the shim must report the backend's code, and never
// hang, in every one of 1,000 runs as PID 1.
func TestCatatonit4Loop(t *testing.T) {
	const runs = 1000
	script := `i=0; while [ $i -lt 8 ]; do (exit $1) & i=$((i+1)); done; sleep 0.00$3 & exit $2`
	t0 := time.Now()
	right, withOrphans := 0, 0
	var slowest time.Duration
	for i := range runs {
		code := (i*37 + 1) % 256
		decoy := (code + 1) % 256
		r := start(t, opts{PID1: true, NoNet: true, Direct: true, Args: []string{"--forward", "off", "-v"},
			Program: []string{"/bin/busybox", "sh", "-c", script, "sh", strconv.Itoa(decoy), strconv.Itoa(code), strconv.Itoa(i % 10)}})
		s := time.Now()
		got := r.Wait(20 * time.Second)
		if d := r.ExitedAt.Sub(s); d > slowest {
			slowest = d
		}
		if r.Stderr.Count(func(l string) bool { return strings.Contains(l, "reaped pid") }) > 0 {
			withOrphans++
		}
		if got != code {
			t.Errorf("run %d: exit %d, want %d", i, got, code)
			continue
		}
		right++
	}
	t.Logf("%d of %d runs exited with the backend's status, none hung (slowest %v); in %d runs the shim also reaped orphans; %v in all",
		right, runs, slowest.Round(time.Millisecond), withOrphans, time.Since(t0).Round(time.Millisecond))
	if withOrphans == 0 {
		t.Errorf("no run had an orphan reaped by the shim: the case was not exercised")
	}
}

// When the shim is not PID 1 and is SIGKILLed, the kernel sends the backend
// --parent-death-signal (cmd/convex-shim's TestParentDeathSignal covers the
// default and "none" on an idle shim). Here: after the shim has forwarded
// traffic (the parent-death signal is tied to the thread that forked the
// backend, which must still be there); a catchable signal the backend sees;
// the env twin; and what happens to the backend's own children.
func TestParentDeathSignalMore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		dies  bool
		sees  string // a line the backend prints
		fwd   bool   // forward traffic before the kill
		child bool   // the backend has a Node-server child
	}{
		{"default after traffic", nil, nil, true, "", true, true},
		{"SIGTERM", []string{"--parent-death-signal", "SIGTERM"}, nil, true, "backend got SIGTERM", false, false},
		{"env twin SIGUSR1", nil, []string{"CONVEX_SHIM_PARENT_DEATH_SIGNAL=USR1"}, false, "backend got SIGUSR1", false, false},
		{"env twin none", nil, []string{"CONVEX_SHIM_PARENT_DEATH_SIGNAL=none"}, false, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"REL_LISTEN=127.0.0.1:3210"}, tc.env...)
			if tc.child {
				env = append(env, "REL_KIDS=obey")
			}
			r := start(t, opts{Args: tc.args, Env: env})
			var pid int
			fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &pid)
			st := startTime(pid)
			var kidPid int
			if tc.child {
				fmt.Sscanf(r.Line("kid obey pid="), "kid obey pid=%d", &kidPid)
			}
			if tc.fwd {
				conns, err := openHeld(r.PID, 200, "127.0.0.1:80")
				if err != nil {
					t.Fatal(err)
				}
				closeAll(conns)
			}
			if err := r.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-r.Done
			if tc.sees != "" {
				r.Line(tc.sees)
			}
			if tc.dies {
				if !eventually(5*time.Second, 5*time.Millisecond, func() bool { return !alive(pid, st) }) {
					t.Fatalf("backend %d still running 5s after the shim was SIGKILLed", pid)
				}
			} else if !alive(pid, st) {
				t.Fatalf("backend %d died with the shim", pid)
			}
			if tc.child {
				// The backend's own children are not the shim's to kill
				// once it is gone: they are adopted by the next subreaper.
				kst := startTime(kidPid)
				if alive(kidPid, kst) {
					t.Logf("the backend's child %d outlived the shim and the backend (now a child of pid %d); see docs/reliability.md", kidPid, ppidOf(kidPid))
				}
			}
			unix.Kill(pid, unix.SIGKILL)
		})
	}
}

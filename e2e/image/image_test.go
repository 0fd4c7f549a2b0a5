// Package image tests the image users build, Dockerfile.backend (target prebuilt, the host's
// bin/convex-shim), with the stand-in Convex backend (e2e/standin) as its BASE_IMAGE: the
// end-to-end cases of issue 3. Each test runs its own container and logs what it observed
// (exit codes, signals the backend and its Node server saw, timings).
//
// Docker is required: without it these tests fail, they do not skip.
package image

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/dockertest"
	"golang.org/x/sys/unix"
)

const (
	// originNoPort is the origin of the seed document: Node callbacks go to 127.0.0.1:80.
	originNoPort = "CONVEX_CLOUD_ORIGIN=http://127.0.0.1"
	// retryFast shortens the Node server's retry backoff so a failure shows quickly.
	retryFast = "STANDIN_RETRY_BASE_MS=10"
)

// allOps is every callback kind issue 3 names: query, mutation, action, scheduling, and
// ctx.storage store/get/delete (each storage op is itself two requests, facts §1).
var allOps = []string{"query", "mutation", "action", "schedule_job", "storage_store", "storage_get", "storage_delete"}

// shimmed runs the shimmed image with env and extra docker run options.
func shimmed(t *testing.T, env []string, opts ...string) *dockertest.Container {
	t.Helper()
	return dockertest.Start(t, dockertest.BuildShimImage(t), dockertest.Options{Env: env, Docker: opts})
}

// runOps runs a Node action making ops and fails unless every callback succeeded.
func runOps(t *testing.T, c *dockertest.Container, ops ...string) dockertest.NodeResult {
	t.Helper()
	res, err := c.NodeAction("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Results) != len(ops) {
		t.Fatalf("node action %v: %d results, failures %q; want all %d ok", ops, len(res.Results), res.Errors(), len(ops))
	}
	return res
}

func TestImageConfig(t *testing.T) {
	t.Parallel()
	img := dockertest.BuildShimImage(t)
	out, err := dockertest.Docker("image", "inspect", "-f",
		"{{json .Config.WorkingDir}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}}", img)
	if err != nil {
		t.Fatal(err)
	}
	// The base's working directory, ports and volume are kept; no CMD, so docker run
	// arguments reach run_backend.sh.
	want := `"/convex" ["/usr/local/bin/convex-shim","--","./run_backend.sh"] null {"3210/tcp":{},"3211/tcp":{}} {"/convex/data":{}}`
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("image config:\n got %s\nwant %s", got, want)
	}
}

// docker run IMAGE extra-args hands extra-args to run_backend.sh, as the stock image does: the
// image has no CMD, and the shim passes its program's arguments through.
func TestExtraArgsReachBackend(t *testing.T) {
	t.Parallel()
	c := dockertest.Start(t, dockertest.BuildShimImage(t), dockertest.Options{
		Env: []string{originNoPort}, Args: []string{"--extra-flag=from-docker-run"}})
	c.WaitLog(t, `ignoring argument "--extra-flag=from-docker-run"`)
	t.Logf("docker run IMAGE --extra-flag=from-docker-run: the backend got it")
}

// (1) The seed's failure is reproduced on the stand-in as shipped by
// e2e/standin.TestSeedFailureReproduced: with CONVEX_CLOUD_ORIGIN=http://127.0.0.1 a Node
// action's query callback fails with "ECONNREFUSED 127.0.0.1:80". Same environment, the
// shimmed image: it succeeds.
func TestSeedFailureFixed(t *testing.T) {
	t.Parallel()
	c := shimmed(t, []string{originNoPort, retryFast})
	c.WaitReady(t)
	res := runOps(t, c, "query")
	t.Logf("CONVEX_CLOUD_ORIGIN=http://127.0.0.1, query through the shim: ok, value %s", res.Results[0].Value)
	if logs := c.Logs(t); !strings.Contains(logs, "127.0.0.1:80 -> 127.0.0.1:3210") {
		t.Errorf("shim startup line does not name the forward 127.0.0.1:80 -> 127.0.0.1:3210; logs:\n%s", logs)
	}
}

// (2) One container: every kind of callback succeeds, by either of the shim's two paths:
// Node's fetch preload straight to 3210 (the default), and the 127.0.0.1:80 -> 3210 forward
// that serves every other client (the preload turned off, so fetch takes it too). Each path
// must carry every request and the other none.
func TestAllCallbacks(t *testing.T) {
	t.Parallel()
	const throughForward = "forward: 127.0.0.1:80 -> 127.0.0.1:3210: client 127.0.0.1:"
	for _, tc := range []struct {
		name, preload string
		startup       string // the startup line naming the path
		viaForward    bool
	}{
		{"fetch preload", "true", "Node callbacks to http://127.0.0.1 -> 127.0.0.1:3210 in the container (fetch preload)", false},
		{"forward", "false", "forwarding 127.0.0.1:80 -> 127.0.0.1:3210 (default)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := shimmed(t, []string{originNoPort, retryFast, "CONVEX_SHIM_VERBOSE=true", "CONVEX_SHIM_NODE_PRELOAD=" + tc.preload})
			c.WaitReady(t)
			res := runOps(t, c, allOps...)
			var seen []string
			for _, r := range res.Results {
				seen = append(seen, r.Op+" ok")
			}
			logs := c.Logs(t)
			n := strings.Count(logs, throughForward)
			t.Logf("origin http://127.0.0.1, %s: %s; %d connections through the forward", tc.name, strings.Join(seen, ", "), n)
			if !strings.Contains(logs, tc.startup) {
				t.Errorf("logs lack %q:\n%s", tc.startup, logs)
			}
			if tc.viaForward != (n > 0) {
				t.Errorf("%d connections through the 127.0.0.1:80 forward, want them only with the preload off:\n%s", n, logs)
			}
		})
	}
}

// inFlight starts a Node action whose query callback the backend holds for delay, waits until
// the backend is holding it, and returns a channel that yields the action's outcome.
func inFlight(t *testing.T, c *dockertest.Container, delay string) <-chan error {
	t.Helper()
	runOps(t, c, "query") // start the Node server first: it is started lazily
	done := make(chan error, 1)
	go func() {
		res, err := c.NodeAction(delay, "query")
		if err == nil && !res.OK {
			err = fmt.Errorf("node action query (held %s) failed: %q", delay, res.Errors())
		}
		done <- err
	}()
	c.WaitLog(t, "callback query: sleeping "+delay)
	return done
}

// (3) docker stop (SIGTERM, default 10 s timeout) while a callback is in flight: the shim
// turns SIGTERM into one SIGINT to the backend, none to its Node server; the callback, which
// travels through the shim's forward, completes during the drain; exit 0 long before 10 s.
// The preload is off so that the callback takes the forward, the path of every client other
// than fetch, which must keep serving until the backend has exited.
func TestDockerStopDrains(t *testing.T) {
	t.Parallel()
	c := shimmed(t, []string{originNoPort, retryFast, "CONVEX_SHIM_NODE_PRELOAD=false"})
	c.WaitReady(t)
	done := inFlight(t, c, "2s")

	began := time.Now()
	if _, err := dockertest.Docker("stop", c.Name); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	cbErr := <-done
	code := c.Wait(t)
	signals := c.SignalLog(t)
	t.Logf("docker stop (10s timeout) with a 2s callback in flight: took %s, exit code %d, signals %q, in-flight callback: %v",
		took.Round(time.Millisecond), code, signals, okOr(cbErr))

	if cbErr != nil {
		t.Errorf("in-flight callback: %v", cbErr)
	}
	if code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	if !slices.Equal(signals, []string{"backend SIGINT"}) {
		t.Errorf("signal log = %q, want exactly [backend SIGINT] (and no node line)", signals)
	}
	if tl := c.StopTimeline(t); tl.Took() >= 8*time.Second || !tl.Killed.IsZero() {
		t.Errorf("stop request to exit took %s (SIGKILL sent: %v), want a drain well under the 10s timeout (< 8s)", tl.Took(), !tl.Killed.IsZero())
	} else {
		t.Logf("the shim: stop request received -> container exited in %s", tl.Took().Round(time.Millisecond))
	}
}

func okOr(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// (4) A drain that outlasts the shim's grace: after CONVEX_SHIM_GRACE=2s the shim SIGKILLs
// the backend's process group and exits 137, long before docker stop's own 20 s.
func TestGraceEscalation(t *testing.T) {
	t.Parallel()
	c := shimmed(t, []string{originNoPort, "STANDIN_DRAIN_DELAY=30s", "CONVEX_SHIM_GRACE=2s"})
	c.WaitReady(t)
	runOps(t, c, "query") // a Node server in the group too

	began := time.Now()
	if _, err := dockertest.Docker("stop", "-t", "20", c.Name); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	code := c.Wait(t)
	signals := c.SignalLog(t)
	var killLine string
	for _, line := range strings.Split(c.Logs(t), "\n") {
		if strings.HasPrefix(line, "convex-shim:") && strings.Contains(line, "sending SIGKILL") {
			killLine = line
		}
	}
	t.Logf("docker stop -t 20, drain 30s, grace 2s: took %s, exit code %d, signals %q, shim said %q",
		took.Round(time.Millisecond), code, signals, killLine)

	if code != 137 {
		t.Errorf("exit code = %d, want 137 (SIGKILL after the grace)", code)
	}
	if killLine == "" {
		t.Error("no convex-shim line with \"sending SIGKILL\" in docker logs")
	}
	if !slices.Equal(signals, []string{"backend SIGINT"}) {
		t.Errorf("signal log = %q, want exactly [backend SIGINT] before the SIGKILL", signals)
	}
	// The grace is the shim's own timer: from its log line for the stop request to its log
	// line for the SIGKILL (both timestamped by Docker alike), then on to the exit.
	tl := c.StopTimeline(t)
	t.Logf("the shim: stop request -> SIGKILL %s, -> container exited %s",
		tl.Killed.Sub(tl.Received).Round(time.Millisecond), tl.Took().Round(time.Millisecond))
	if k := tl.Killed.Sub(tl.Received); tl.Killed.IsZero() || k < 1900*time.Millisecond || k > 3*time.Second {
		t.Errorf("stop request to SIGKILL took %s (SIGKILL logged: %v), want the 2s grace", k, !tl.Killed.IsZero())
	}
	if tl.Took() > 6*time.Second {
		t.Errorf("stop request to exit took %s, want about the 2s grace, not docker's 20s", tl.Took())
	}
}

// (5) Orphans from the backend's tree (POST /test/orphans) and from docker exec sessions are
// adopted by the shim, PID 1, and reaped: no Z is left in ps.
func TestOrphansReaped(t *testing.T) {
	t.Parallel()
	c := shimmed(t, []string{originNoPort})
	c.WaitReady(t)

	// Long enough to see them adopted, short to keep the test quick; those from docker exec
	// are made first and live longer.
	const execLife, backendLife = 3 * time.Second, time.Second
	var orphans []int
	for range 5 {
		// The shell exits at once, leaving two sleeps re-parented to PID 1. Their output goes
		// nowhere, or docker exec would wait for them to close it.
		out := c.Exec(t, "sh", "-c", fmt.Sprintf("sleep %g </dev/null >/dev/null 2>&1 & echo $!; sleep %g </dev/null >/dev/null 2>&1 & echo $!; exit",
			execLife.Seconds(), execLife.Seconds()-0.5))
		for _, f := range strings.Fields(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err != nil {
				t.Fatalf("docker exec: parse pid %q: %v", f, err)
			}
			orphans = append(orphans, pid)
		}
	}
	fromExec := len(orphans)
	orphans = append(orphans, c.Orphans(t, 10, backendLife)...)

	// Adopted: every orphan still there has PID 1, the shim, as parent; the backend's, made
	// last, are all still running, and some of docker exec's too.
	adoptedExec, adoptedBackend := 0, 0
	for _, p := range c.Processes(t) {
		if i := slices.Index(orphans, p.PID); i >= 0 {
			if p.PPID != 1 {
				t.Errorf("orphan %+v: parent %d, want 1 (convex-shim)", p, p.PPID)
			}
			if i < fromExec {
				adoptedExec++
			} else {
				adoptedBackend++
			}
		}
	}
	if adoptedExec == 0 || adoptedBackend != len(orphans)-fromExec {
		t.Errorf("orphans seen under PID 1: %d of docker exec's %d, %d of the backend's %d; want some and all",
			adoptedExec, fromExec, adoptedBackend, len(orphans)-fromExec)
	}
	var last []dockertest.Process
	polls, maxZ := 0, 0
	took := dockertest.Eventually(t, 10*time.Second, "every orphan reaped and no zombie", func() (bool, string) {
		last = c.Processes(t)
		polls++
		maxZ = max(maxZ, len(dockertest.Zombies(last)))
		var left []dockertest.Process
		for _, p := range last {
			if slices.Contains(orphans, p.PID) || strings.HasPrefix(p.Stat, "Z") {
				left = append(left, p)
			}
		}
		return len(left) == 0, fmt.Sprintf("left: %+v", left)
	})
	t.Logf("%d orphans: %d from docker exec (%d seen adopted by PID 1), %d from the backend (%d seen adopted); all gone %s later; most Z seen in %d polls of ps: %d; ps now: %+v",
		len(orphans), fromExec, adoptedExec, len(orphans)-fromExec, adoptedBackend, took.Round(time.Millisecond), polls, maxZ, last)
}

// Dockerfile.backend's HEALTHCHECK (convex-shim --check: GET /version through every forward)
// turns the container healthy once the backend listens. The interval is shortened here.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	c := shimmed(t, []string{originNoPort}, "--health-interval", "200ms")
	var status string
	took := dockertest.Eventually(t, dockertest.Deadline, "container healthy", func() (bool, string) {
		out, err := dockertest.Docker("inspect", "-f", "{{.State.Health.Status}}", c.Name)
		if err != nil {
			t.Fatal(err)
		}
		status = strings.TrimSpace(out)
		return status == "healthy", status
	})
	out, err := dockertest.Docker("inspect", "-f", "{{json .State.Health.Log}}", c.Name)
	if err != nil {
		t.Fatal(err)
	}
	var probes []struct {
		ExitCode int
		Output   string
	}
	if err := json.Unmarshal([]byte(out), &probes); err != nil || len(probes) == 0 {
		t.Fatalf("health log %q: %v", out, err)
	}
	failed := 0
	for _, p := range probes {
		if p.ExitCode != 0 {
			failed++
		}
	}
	last := probes[len(probes)-1]
	t.Logf("healthy after %s (%d probes, %d failed while the backend started); last probe exit %d: %q",
		took.Round(time.Millisecond), len(probes), failed, last.ExitCode, last.Output)
}

// (6) docker run -it and Ctrl-C: the terminal's SIGINT reaches only the shim (the backend is
// in its own process group), which sends the backend exactly one SIGINT; exit 0.
func TestCtrlCUnderTTY(t *testing.T) {
	t.Parallel()
	img := dockertest.BuildShimImage(t)
	name := dockertest.RandomName("convex-e2e-tty-")
	c := dockertest.Track(t, name)

	master, slave := openPTY(t)
	cmd := exec.Command("docker", "run", "-it", "--name", name, "-e", originNoPort, img)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		master.Close()
	})

	term := newTermReader(master)
	if err := term.waitFor("listening on", dockertest.Deadline); err != nil {
		t.Fatalf("docker run -it: %v; terminal so far:\n%s", err, term.text())
	}
	began := time.Now()
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	var runErr error
	select {
	case runErr = <-exited:
	case <-time.After(dockertest.Deadline):
		t.Fatalf("docker run -it still running %s after Ctrl-C; terminal:\n%s", dockertest.Deadline, term.text())
	}
	took := time.Since(began)
	code := c.Wait(t) // the container's own code; docker run -it exits with it
	signals := c.SignalLog(t)
	t.Logf("docker run -it, Ctrl-C: container exit code %d (docker run exit code %d) after %s, signals %q",
		code, dockertest.ExitCode(runErr), took.Round(time.Millisecond), signals)

	if code != 0 || dockertest.ExitCode(runErr) != 0 {
		t.Errorf("exit code = %d (docker run %d), want 0; terminal:\n%s", code, dockertest.ExitCode(runErr), term.text())
	}
	if !slices.Equal(signals, []string{"backend SIGINT"}) {
		t.Errorf("signal log = %q, want exactly [backend SIGINT]; terminal:\n%s", signals, term.text())
	}
}

// openPTY opens a pseudo-terminal pair: /dev/ptmx, unlocked (TIOCSPTLCK), its slave named by
// TIOCGPTN.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	var n uint32
	var ioctlErr error
	err = ioctlOn(m, func(fd int) {
		if ioctlErr = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); ioctlErr != nil {
			ioctlErr = fmt.Errorf("unlockpt (TIOCSPTLCK): %w", ioctlErr)
			return
		}
		if n, ioctlErr = unix.IoctlGetUint32(fd, unix.TIOCGPTN); ioctlErr != nil {
			ioctlErr = fmt.Errorf("ptsname (TIOCGPTN): %w", ioctlErr)
		}
	})
	if err = cmpErr(err, ioctlErr); err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open the pty slave: %v", err)
	}
	// A size, as a real terminal has; docker run -it copies it to the container's tty.
	err = ioctlOn(s, func(fd int) {
		ioctlErr = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 120})
	})
	if err = cmpErr(err, ioctlErr); err != nil {
		m.Close()
		s.Close()
		t.Fatalf("set the pty size: %v", err)
	}
	return m, s
}

// ioctlOn runs f on f's descriptor without putting the file in blocking mode (as Fd would).
func ioctlOn(f *os.File, do func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { do(int(fd)) })
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// termReader collects what the pty master reads.
type termReader struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{} // closed and replaced on every read
}

func newTermReader(master *os.File) *termReader {
	r := &termReader{changed: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
			if err != nil { // EIO once the last slave descriptor is closed
				return
			}
		}
	}()
	return r
}

func (r *termReader) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func (r *termReader) waitFor(substr string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		found, changed := strings.Contains(r.buf.String(), substr), r.changed
		r.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return fmt.Errorf("no %q on the terminal after %s", substr, timeout)
		}
	}
}

// (7) The container exits with the backend's status: its own code, or 128+signal.
func TestExitStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		act  func(t *testing.T, c *dockertest.Container)
		code int
	}{
		{"backend exits 3", nil, func(t *testing.T, c *dockertest.Container) {
			c.WaitReady(t)
			c.Post(t, "/test/exit?code=3", 202)
		}, 3},
		{"backend exits 3 at startup", []string{"STANDIN_EXIT_CODE=3"}, func(t *testing.T, c *dockertest.Container) {}, 3},
		{"backend aborts", nil, func(t *testing.T, c *dockertest.Container) {
			c.WaitReady(t)
			c.Post(t, "/test/abort", 202)
		}, 134},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := shimmed(t, append([]string{originNoPort}, tc.env...))
			tc.act(t, c)
			code := c.Wait(t)
			t.Logf("%s: container exit code %d, signals %q", tc.name, code, c.SignalLog(t))
			if code != tc.code {
				t.Errorf("exit code = %d, want %d", code, tc.code)
			}
		})
	}
}

// Hardened runs (8). What they establish:
//
//   - --read-only root filesystem with /convex/data on a named volume needs nothing else: the
//     backend writes only under /convex/data (TMPDIR is /convex/data/tmp, the Node server's
//     socket included) and the shim writes nothing.
//   - Capabilities: with every one dropped (--cap-drop ALL) the only thing that can fail is
//     the bind of 127.0.0.1:80, and only where net.ipv4.ip_unprivileged_port_start is the
//     kernel's default 1024 (Kubernetes pods, other runtimes): then CAP_NET_BIND_SERVICE is
//     needed and is enough. Docker 20.10+ sets that sysctl to 0 in every container it gives a
//     network namespace, so under Docker no capability at all is needed. Signalling and
//     reaping the backend's tree need none (same user).
//   - A non-root user cannot run the image as built: the base's /convex files are mode 744
//     root:root (like the real image), so the shim reports ./run_backend.sh not executable
//     and exits 126 before binding anything. Run as root with --cap-drop ALL instead, or make
//     those files executable for the user. Where the user can run the backend (here: a copy
//     made executable in a tmpfs), port 80 needs the sysctl or the capability, and a forward
//     on an unprivileged port with a matching origin needs neither.
const (
	kernelPorts = "net.ipv4.ip_unprivileged_port_start=1024" // the kernel's default
	// asUser runs the stand-in backend as a user who cannot execute /convex/*: a copy made
	// executable in /tmp, with its data in /tmp, and the flags run_backend.sh passes.
	asUser = `cp /convex/convex-local-backend /tmp/backend && chmod 755 /tmp/backend && ` +
		`exec /tmp/backend --port 3210 --site-proxy-port 3211 --convex-origin "$CONVEX_CLOUD_ORIGIN"`
)

func TestHardened(t *testing.T) {
	t.Parallel()
	img := dockertest.BuildShimImage(t)
	nonRootBackend := []string{"--entrypoint", "/usr/local/bin/convex-shim"}
	userEnv := []string{"TMPDIR=/tmp", "STANDIN_SIGNAL_LOG=/tmp/signals.log", retryFast}
	userOpts := []string{"--user", "1000:1000", "--cap-drop", "ALL", "--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777"}
	cases := []struct {
		name string
		env  []string
		opts []string
		args []string // after the image (with nonRootBackend: the shim's own arguments)
		// Either the callbacks work (and, for root, docker stop drains), or the container
		// exits with code and its only log line contains each of logs.
		works bool
		code  int
		logs  []string
	}{
		{
			name:  "root, read-only, cap-drop ALL + NET_BIND_SERVICE, kernel port sysctl",
			env:   []string{originNoPort, retryFast},
			opts:  []string{"--read-only", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "--sysctl", kernelPorts},
			works: true,
		},
		{
			name:  "root, read-only, cap-drop ALL, Docker's port sysctl",
			env:   []string{originNoPort, retryFast},
			opts:  []string{"--read-only", "--cap-drop", "ALL"},
			works: true,
		},
		{
			name: "root, cap-drop ALL, kernel port sysctl",
			env:  []string{originNoPort},
			opts: []string{"--cap-drop", "ALL", "--sysctl", kernelPorts},
			code: 1, logs: []string{"127.0.0.1:80", "CAP_NET_BIND_SERVICE"},
		},
		{
			name: "user 1000, cap-drop ALL, the image as built",
			env:  []string{originNoPort},
			opts: []string{"--user", "1000:1000", "--cap-drop", "ALL"},
			code: 126, logs: []string{"./run_backend.sh", "permission denied"},
		},
		{
			name: "user 1000, cap-drop ALL, kernel port sysctl, port 80",
			env:  append([]string{originNoPort}, userEnv...),
			opts: slices.Concat(userOpts, []string{"--sysctl", kernelPorts}, nonRootBackend),
			args: []string{"--", "sh", "-c", asUser},
			code: 1, logs: []string{"127.0.0.1:80", "CAP_NET_BIND_SERVICE"},
		},
		{
			name:  "user 1000, cap-drop ALL, kernel port sysctl, forward 8080",
			env:   append([]string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:8080", "CONVEX_SHIM_FORWARD=127.0.0.1:8080=127.0.0.1:3210"}, userEnv...),
			opts:  slices.Concat(userOpts, []string{"--sysctl", kernelPorts}, nonRootBackend),
			args:  []string{"--", "sh", "-c", asUser},
			works: true,
		},
		{
			name:  "user 1000, cap-drop ALL, Docker's port sysctl, port 80",
			env:   append([]string{originNoPort}, userEnv...),
			opts:  slices.Concat(userOpts, nonRootBackend),
			args:  []string{"--", "sh", "-c", asUser},
			works: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			if tc.works && !slices.Contains(opts, "--user") {
				opts = append([]string{"-v", dockertest.Volume(t) + ":/convex/data"}, opts...)
			}
			c := dockertest.Start(t, img, dockertest.Options{Env: tc.env, Docker: opts, Args: tc.args})
			if !tc.works {
				code := c.Wait(t)
				logs := strings.TrimSpace(c.Logs(t))
				t.Logf("%s: exit code %d, docker logs: %s", tc.name, code, logs)
				if code != tc.code {
					t.Errorf("exit code = %d, want %d", code, tc.code)
				}
				if strings.Count(logs, "\n") != 0 {
					t.Errorf("docker logs has %d lines, want the shim's one error line", strings.Count(logs, "\n")+1)
				}
				for _, want := range tc.logs {
					if !strings.Contains(logs, want) {
						t.Errorf("docker logs do not mention %q", want)
					}
				}
				return
			}
			c.WaitReady(t)
			runOps(t, c, allOps...)
			sysctl := strings.TrimSpace(c.Exec(t, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"))
			caps := strings.TrimSpace(c.Exec(t, "grep", "CapEff", "/proc/1/status"))
			user := strings.TrimSpace(c.Exec(t, "id", "-u"))
			if slices.Contains(opts, "--user") {
				t.Logf("%s: uid %s, ip_unprivileged_port_start %s, shim %s: all %d callbacks ok", tc.name, user, sysctl, caps, len(allOps))
				return
			}
			began := time.Now()
			if _, err := dockertest.Docker("stop", c.Name); err != nil {
				t.Fatal(err)
			}
			took := time.Since(began)
			code := c.Wait(t)
			signals := c.SignalLog(t)
			t.Logf("%s: uid %s, ip_unprivileged_port_start %s, shim %s: all %d callbacks ok; docker stop took %s, exit code %d, signals %q",
				tc.name, user, sysctl, caps, len(allOps), took.Round(time.Millisecond), code, signals)
			if code != 0 || !slices.Equal(signals, []string{"backend SIGINT"}) {
				t.Errorf("docker stop: exit code %d, signals %q; want 0 and [backend SIGINT]", code, signals)
			}
		})
	}
}

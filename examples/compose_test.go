package examples

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/dockertest"
)

// The compose files are brought up for real with docker-compose (v1, as Debian ships it) on
// the stand-in Convex image, with the Docker helpers of internal/dockertest: the same image
// builds, under the same build lock, as the end-to-end tests in e2e/.

const composeFile = "docker-compose/docker-compose.yml"

// TestComposeUp brings examples/docker-compose up for real (backend only: the
// dashboard image cannot be pulled here) on the stand-in Convex image, runs Node
// callbacks through the shim's 127.0.0.1:80, then stops it with a callback in
// flight and checks the backend drained: exactly one SIGINT, exit 0, before the
// shim's grace.
func TestComposeUp(t *testing.T) {
	port := "8080"
	if ln, err := net.Listen("tcp4", "127.0.0.1:8080"); err != nil {
		port = dockertest.FreePort(t) // 8080 is taken on this machine; any other port is the same case
	} else {
		ln.Close()
	}
	origin := "http://127.0.0.1:" + port
	t.Logf("PORT=%s, so CONVEX_CLOUD_ORIGIN=%s", port, origin)
	c := dockertest.NewCompose(t, composeFile, "convexshimex", []string{
		"CONVEX_BACKEND_IMAGE=" + dockertest.StandinImage,
		"CONVEX_SHIM_TARGET=prebuilt",
		"CONVEX_SHIM_VERBOSE=true",
		// Loopback only. The origin names the published PORT, so the Node
		// callbacks go to 127.0.0.1:PORT inside the container, which only
		// the shim's origin-derived forward serves: Convex's compose file with PORT=8080.
		"PUBLISH_ADDRESS=127.0.0.1",
		"PORT=" + port,
		"CONVEX_CLOUD_ORIGIN=" + origin, // as a .env beside the file would set it
		// A real number, not Docker's "0" (ephemeral).
		"SITE_PROXY_PORT=" + dockertest.FreePort(t),
	}, "backend")

	// The stand-in image and the host-built shim for Dockerfile.backend's
	// "prebuilt" target (the classic builder cannot build the "backend" target
	// here: its Go stage needs an image pull), and the image built from them.
	start := time.Now()
	c.BuildWithHostBinary("backend")
	built := time.Since(start)
	c.Must("up", "-d", "backend")
	id := c.Must("ps", "-q", "backend")
	if id == "" {
		t.Fatal("docker-compose ps -q backend: no container")
	}
	backend := &dockertest.Container{Name: id}
	health := backend.WaitHealthy(t, 90*time.Second)
	t.Logf("build %v, then up to healthy in %v (%s)", built.Round(time.Millisecond), (time.Since(start) - built).Round(time.Millisecond), health)

	backend.API = c.Must("port", "backend", "3210")
	// The origin's port gets its forward (for clients other than fetch), and Node's fetch
	// callbacks to it go by the preload straight to 3210, as users get them by default.
	// (The forward's own path is proven end to end by e2e/image.TestAllCallbacks/forward.)
	forward := "127.0.0.1:" + port + " -> 127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"
	if logs := backend.Logs(t); !strings.Contains(logs, forward) {
		t.Errorf("logs lack the forward %q:\n%s", forward, logs)
	}
	checkCallbacks(t, backend, []string{"query", "mutation", "storage_store", "storage_get"},
		"Node callbacks to "+origin+" -> 127.0.0.1:3210 in the container (fetch preload)", "")

	stopDrains(t, backend, 8*time.Second, "docker-compose stop", func() { c.Must("stop", "backend") })
}

// checkCallbacks runs a Node action making ops against the backend c and checks that
// each callback succeeded on the shim's route: c's logs (with CONVEX_SHIM_VERBOSE) hold
// the route's startup line, and, for a forward (through not empty), name each connection
// through it. The fetch preload logs no connections: it sends them straight to the backend.
func checkCallbacks(t *testing.T, c *dockertest.Container, ops []string, startup, through string) {
	t.Helper()
	start := time.Now()
	res, err := c.NodeActionOK("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for _, r := range res.Results {
		t.Logf("callback %s: ok=%v value=%s", r.Op, r.OK, r.Value)
	}
	if len(res.Results) != len(ops) {
		t.Errorf("%d results for %d ops", len(res.Results), len(ops))
	}
	if got := string(res.Results[len(res.Results)-1].Value); got != `"hello from node"` {
		t.Errorf("storage_get returned %s, want the bytes storage_store uploaded", got)
	}
	logs := c.Logs(t)
	for _, want := range []string{startup, through} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	t.Logf("Node action with %d callbacks: %v", len(ops), took.Round(time.Millisecond))
	if through != "" {
		t.Logf("%d connections through the forward", strings.Count(logs, through))
	}
}

// stopDrains starts a callback that the backend c holds for 2s, runs stop (the
// platform's stop) while it is in flight, and checks the drain: the callback
// completes, the container exits 0 well inside the shim's grace, and the backend saw
// exactly one SIGINT (none reached its Node server).
func stopDrains(t *testing.T, c *dockertest.Container, grace time.Duration, stopWhat string, stop func()) {
	t.Helper()
	inflight := make(chan error, 1)
	go func() {
		_, err := c.NodeActionOK("2s", "query")
		inflight <- err
	}()
	c.WaitLog(t, "callback query: sleeping 2s")

	start := time.Now()
	stop()
	took := time.Since(start)
	select {
	case err := <-inflight:
		if err != nil {
			t.Errorf("callback in flight during %s: %v", stopWhat, err)
		} else {
			t.Logf("callback in flight during %s: completed", stopWhat)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("callback in flight during %s: no answer 30s later", stopWhat)
	}
	state, err := dockertest.Inspect(c.Name, "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}")
	if err != nil {
		t.Fatal(err)
	}
	// The bound is on what the shim controls, from the container's own records: the CLI's
	// time also holds the daemon's delay in delivering the signal, seen at 25 s on a loaded
	// machine.
	tl := c.StopTimeline(t)
	t.Logf("%s returned after %v; the shim: stop request received -> container exited in %v; container: %s",
		stopWhat, took.Round(time.Millisecond), tl.Took().Round(time.Millisecond), state)
	if state != "exited 0 false" {
		t.Errorf("container state, exit code, OOMKilled = %q, want \"exited 0 false\" (a drained backend exits 0)", state)
	}
	if tl.Took() >= grace || !tl.Killed.IsZero() {
		t.Errorf("stop request to exit took %v (SIGKILL sent: %v), not under the shim's %v grace: the drain did not end it", tl.Took(), !tl.Killed.IsZero(), grace)
	}
	signals := c.SignalLog(t)
	t.Logf("signals.log: %q", signals)
	if !slices.Equal(signals, []string{"backend SIGINT"}) {
		t.Errorf("signals received = %q, want exactly [\"backend SIGINT\"] (one SIGINT to the backend, none to its Node server)", signals)
	}
}

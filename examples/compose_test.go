package examples

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	composeFile  = "docker-compose/docker-compose.yml"
	standinImage = "convex-standin:test"
)

// compose runs docker-compose (v1, as Debian ships it) on the example file with a
// project name of its own and the stand-in substituted for the Convex image.
type compose struct {
	t       *testing.T
	project string
	env     []string
}

func (c *compose) run(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-f", composeFile, "-p", c.project}, args...)
	cmd := exec.CommandContext(ctx, "docker-compose", full...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *compose) must(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := c.run(ctx, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// requireTools fails (never skips) when what this test needs is missing: CI must
// run it, and a silent skip would hide that the example was never brought up.
func requireTools(t *testing.T) {
	t.Helper()
	if _, err := docker("version", "--format", "{{.Server.Version}}"); err != nil {
		t.Fatalf("the Docker engine is not reachable; this test needs it and does not skip: %v", err)
	}
	if out, err := exec.Command("docker-compose", "version").CombinedOutput(); err != nil {
		t.Fatalf("docker-compose (v1) is missing; this test needs it and does not skip (apt-get install docker-compose): %v\n%s", err, out)
	}
}

// freePort asks the kernel for a free loopback port. SITE_PROXY_PORT must be a
// real number, not Docker's "0" (ephemeral): the compose file also puts it in
// CONVEX_SITE_ORIGIN, as Convex's own file does.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type nodeActionResult struct {
	OK      bool `json:"ok"`
	Results []struct {
		Op    string          `json:"op"`
		OK    bool            `json:"ok"`
		Value json.RawMessage `json:"value"`
		Error string          `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// nodeAction asks the stand-in to run a "Node action" making the given callbacks,
// each of which travels Node fetch -> the origin's loopback port -> convex-shim -> 3210.
func nodeAction(api string, ops []string, delay string) (nodeActionResult, error) {
	var res nodeActionResult
	body, _ := json.Marshal(map[string]any{"ops": ops, "delay": delay})
	resp, err := http.Post("http://"+api+"/test/node-action", "application/json", bytes.NewReader(body))
	if err != nil {
		return res, fmt.Errorf("POST /test/node-action %v: %w", ops, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("POST /test/node-action %v: HTTP %d: %s", ops, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("decode node-action reply %q: %w", raw, err)
	}
	if !res.OK {
		return res, fmt.Errorf("node action %v failed: %s", ops, raw)
	}
	return res, nil
}

// TestComposeUp brings examples/docker-compose up for real (backend only: the
// dashboard image cannot be pulled here) on the stand-in Convex image, runs Node
// callbacks through the shim's 127.0.0.1:80, then stops it with a callback in
// flight and checks the backend drained: exactly one SIGINT, exit 0, before the
// shim's grace.
func TestComposeUp(t *testing.T) {
	requireTools(t)

	// The stand-in image and the host-built shim for Dockerfile.backend's
	// "prebuilt" target (the classic builder cannot build the "backend" target
	// here: its Go stage needs an image pull).
	if out, err := exec.Command("bash", "../e2e/standin/build.sh", standinImage).CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in: %v\n%s", err, out)
	}
	if out, err := exec.Command("make", "-C", "..", "build").CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}

	port := "8080"
	if ln, err := net.Listen("tcp4", "127.0.0.1:8080"); err != nil {
		port = freePort(t) // 8080 is taken on this machine; any other port is the same case
	} else {
		ln.Close()
	}
	t.Logf("PORT=%s, so CONVEX_CLOUD_ORIGIN=http://127.0.0.1:%s", port, port)
	c := &compose{t: t, project: "convexshimex" + randomHex(4), env: []string{
		"CONVEX_BACKEND_IMAGE=" + standinImage,
		"CONVEX_SHIM_TARGET=prebuilt",
		"CONVEX_SHIM_VERBOSE=true",
		// Loopback only. PORT is also in CONVEX_CLOUD_ORIGIN, so the Node
		// callbacks go to 127.0.0.1:PORT inside the container, which only
		// the shim's origin-derived forward serves: issue 4's PORT=8080 case.
		"PUBLISH_ADDRESS=127.0.0.1",
		"PORT=" + port,
		"SITE_PROXY_PORT=" + freePort(t),
	}}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			logs, _ := c.run(ctx, "logs", "--no-color", "backend")
			cancel()
			t.Logf("backend logs:\n%s", logs)
		}
		// -v: the data volume; --rmi local: the image built for this project.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := c.run(ctx, "down", "-v", "--rmi", "local", "--remove-orphans"); err != nil {
			t.Errorf("cleanup: %v\n%s", err, out)
		}
	})

	start := time.Now()
	c.must("up", "-d", "--build", "backend")
	id := strings.TrimSpace(c.must("ps", "-q", "backend"))
	if id == "" {
		t.Fatal("docker-compose ps -q backend: no container")
	}

	health := waitHealthy(t, id, 90*time.Second)
	t.Logf("up --build to healthy in %v (%s)", time.Since(start).Round(time.Millisecond), health)

	api := strings.TrimSpace(c.must("port", "backend", "3210"))
	res, err := nodeAction(api, []string{"query", "mutation", "storage_store", "storage_get"}, "")
	if err != nil {
		t.Fatal(err)
	}
	// The callbacks must have gone through the origin's port, not 80.
	logs, _ := docker("logs", id)
	for _, want := range []string{
		"127.0.0.1:" + port + " -> 127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)",      // the startup line
		"forward: 127.0.0.1:" + port + " -> 127.0.0.1:3210: client 127.0.0.1", // a callback through it (-v)
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("backend logs lack %q:\n%s", want, logs)
		}
	}
	for _, r := range res.Results {
		t.Logf("callback %s: ok=%v value=%s", r.Op, r.OK, r.Value)
	}
	if got := string(res.Results[len(res.Results)-1].Value); got != `"hello from node"` {
		t.Errorf("storage_get returned %s, want the bytes storage_store uploaded", got)
	}

	// A callback in flight while the container stops: the drain must let it finish.
	inflight := make(chan error, 1)
	go func() {
		_, err := nodeAction(api, []string{"query"}, "2s")
		inflight <- err
	}()
	waitLog(t, id, "callback query: sleeping 2s", 30*time.Second)

	stopStart := time.Now()
	c.must("stop", "backend")
	stopTook := time.Since(stopStart)

	select {
	case err := <-inflight:
		if err != nil {
			t.Errorf("callback in flight during the stop: %v", err)
		} else {
			t.Log("callback in flight during the stop: completed")
		}
	case <-time.After(30 * time.Second):
		t.Error("callback in flight during the stop: no answer 30s after the stop")
	}

	code, err := docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker-compose stop took %v; backend container exit: %s", stopTook.Round(time.Millisecond), code)
	if code != "0 false" {
		t.Errorf("backend container exit code, OOMKilled = %q, want \"0 false\" (a drained backend exits 0)", code)
	}
	// Well before the shim's grace (8s): it drained, nothing was SIGKILLed.
	if stopTook >= 8*time.Second {
		t.Errorf("docker-compose stop took %v, not under the shim's 8s grace: the drain did not end it", stopTook)
	}

	signals := readSignalLog(t, id)
	t.Logf("signals.log: %q", signals)
	if want := []string{"backend SIGINT"}; strings.Join(signals, "|") != strings.Join(want, "|") {
		t.Errorf("signals received = %q, want exactly %q (one SIGINT to the backend, none to its Node server)", signals, want)
	}
}

// waitHealthy polls Docker's health status until "healthy", failing early when
// the container stops or reports "unhealthy".
func waitHealthy(t *testing.T, id string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case out == "running healthy":
			return out
		case !strings.HasPrefix(out, "running"), strings.HasSuffix(out, "unhealthy"):
			last, _ := docker("inspect", "-f", "{{json .State.Health}}", id)
			t.Fatalf("backend container is %q, want running and healthy; health: %s", out, last)
		case time.Now().After(deadline):
			last, _ := docker("inspect", "-f", "{{json .State.Health}}", id)
			t.Fatalf("backend container still %q after %v; health: %s", out, within, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitLog polls the container's logs until they contain want.
func waitLog(t *testing.T, id, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, _ := exec.Command("docker", "logs", id).CombinedOutput()
		if bytes.Contains(out, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the container's logs after %v:\n%s", want, within, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readSignalLog copies /convex/data/signals.log, where the stand-in records each
// signal it and its Node server receive, out of the stopped container.
func readSignalLog(t *testing.T, id string) []string {
	t.Helper()
	dir := t.TempDir()
	if _, err := docker("cp", id+":/convex/data/signals.log", dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "signals.log"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// Package standin tests the Convex backend stand-in image built by build.sh: that it has the
// real image's layout, reproduces the seed failure (ECONNREFUSED 127.0.0.1:80 from a Node
// action), and handles signals as convex-facts.md §4 says the real backend does. These are the
// behaviours the shim's own end-to-end tests rely on.
//
// Docker is required: without it these tests fail, they do not skip.
package standin

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// image is the tag build.sh produces; STANDIN_IMAGE overrides it.
var image = func() string {
	if v := os.Getenv("STANDIN_IMAGE"); v != "" {
		return v
	}
	return "convex-standin:test"
}()

var (
	buildOnce sync.Once
	buildErr  error
)

// buildImage runs build.sh once per test binary; each test waits for it.
func buildImage(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("docker is not reachable (these tests need it and do not skip): docker version: %v\n%s", err, out)
			return
		}
		out, err := exec.Command("bash", "build.sh", image).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build.sh %s: %v\n%s", image, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

type container struct {
	name string
	api  string // host:port published for 3210; empty if the container exited at once
	site string // host:port published for 3211; empty if the container exited at once
}

// start runs the stand-in with env (KEY=VALUE) and extra docker run options, and removes it
// (with its anonymous /convex/data volume) when the test ends, printing its logs on failure.
func start(t *testing.T, env []string, opts ...string) *container {
	t.Helper()
	buildImage(t)
	c := &container{name: "convex-standin-test-" + randomSuffix()}
	args := []string{"run", "-d", "--name", c.name, "-p", "127.0.0.1::3210", "-p", "127.0.0.1::3211"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	args = append(append(args, opts...), image)
	if _, err := docker(args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := docker("logs", c.name)
			t.Logf("logs of %s:\n%s", c.name, logs)
		}
		if _, err := docker("rm", "-f", "-v", c.name); err != nil {
			t.Log(err)
		}
	})
	// Docker forgets the published ports of an exited container; tests of one that exits
	// at once never use them.
	c.api, _ = publishedPort(c.name, "3210/tcp")
	c.site, _ = publishedPort(c.name, "3211/tcp")
	return c
}

func publishedPort(name, port string) (string, error) {
	out, err := docker("port", name, port)
	if err != nil {
		return "", err
	}
	// One line per host address; -p 127.0.0.1:: gives exactly one.
	return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]), nil
}

// waitReady polls GET /version until it answers 200, failing early if the container exits.
func (c *container) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.api + "/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if state, _ := docker("inspect", "-f", "{{.State.Status}}", c.name); strings.TrimSpace(state) == "exited" || c.api == "" {
			t.Fatalf("container %s exited before GET /version answered (last error: %v)", c.name, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/version: not ready after 30s: %v", c.api, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the container's output contains line.
func (c *container) waitLog(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, err := docker("logs", c.name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: no %q in its logs after 30s", c.name, line)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait blocks until the container exits and returns its exit code.
func (c *container) wait(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "wait", c.name).CombinedOutput()
	if err != nil {
		t.Fatalf("docker wait %s: %v: %s", c.name, err, out)
	}
	var code int
	if _, err := fmt.Sscan(string(out), &code); err != nil {
		t.Fatalf("docker wait %s: parse %q: %v", c.name, out, err)
	}
	return code
}

func (c *container) kill(t *testing.T, sig string) {
	t.Helper()
	if _, err := docker("kill", "-s", sig, c.name); err != nil {
		t.Fatal(err)
	}
}

// signalLog returns the lines of /convex/data/signals.log, which works after the container
// has exited too.
func (c *container) signalLog(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("docker", "cp", c.name+":/convex/data/signals.log", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker cp %s:/convex/data/signals.log: %v: %s", c.name, err, stderr.Bytes())
	}
	tr := tar.NewReader(bytes.NewReader(out))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("read signals.log from docker cp: %v", err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatalf("read signals.log from docker cp: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

type nodeResult struct {
	OK      bool `json:"ok"`
	Results []struct {
		Op    string `json:"op"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"results"`
}

// nodeAction runs a Node action in the stand-in that makes the callbacks in ops.
func (c *container) nodeAction(delay string, ops ...string) (nodeResult, error) {
	var res nodeResult
	body, _ := json.Marshal(map[string]any{"ops": ops, "delay": delay})
	resp, err := http.Post("http://"+c.api+"/test/node-action", "application/json", bytes.NewReader(body))
	if err != nil {
		return res, fmt.Errorf("post node-action %v: %w", ops, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, fmt.Errorf("read node-action %v reply: %w", ops, err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("node-action %v: HTTP %d: %s", ops, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("decode node-action %v reply %q: %w", ops, raw, err)
	}
	return res, nil
}

func get(t *testing.T, url string) (string, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return string(body), resp
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

const retryFast = "STANDIN_RETRY_BASE_MS=10"

func TestImageLayout(t *testing.T) {
	t.Parallel()
	buildImage(t)
	out, err := docker("image", "inspect", "-f",
		"{{json .Config.WorkingDir}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}}", image)
	if err != nil {
		t.Fatal(err)
	}
	want := `"/convex" ["./run_backend.sh"] null {"3210/tcp":{},"3211/tcp":{}} {"/convex/data":{}}`
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("image config:\n got %s\nwant %s", got, want)
	}
}

// (1) /version answers once startup is over, and the site proxy forwards to /http/.
func TestVersionAfterStartup(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1"})
	c.waitReady(t)
	body, resp := get(t, "http://"+c.api+"/version")
	if body != "unknown" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /version = %q (%s), want \"unknown\" (text/plain)", body, resp.Header.Get("Content-Type"))
	}
	if body, _ := get(t, "http://"+c.site+"/hello"); body != "http action GET /hello\n" {
		t.Errorf("GET site /hello = %q, want it forwarded to /http/hello", body)
	}
}

// (2) The seed failure: with an origin that has no port, Node calls back to 127.0.0.1:80.
func TestSeedFailureReproduced(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1", retryFast})
	c.waitReady(t)
	res, err := c.nodeAction("", "query")
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || len(res.Results) != 1 || !strings.Contains(res.Results[0].Error, "ECONNREFUSED 127.0.0.1:80") {
		t.Fatalf("node action query = %+v, want an error containing ECONNREFUSED 127.0.0.1:80", res)
	}
	t.Logf("seed failure: %s", res.Results[0].Error)
}

// (3) With the compose default origin every callback works, no shim needed (facts §1).
func TestCallbacksWithPort3210Origin(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", retryFast})
	c.waitReady(t)
	ops := []string{"query", "mutation", "action", "schedule_job", "storage_store", "storage_get", "storage_delete"}
	res, err := c.nodeAction("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Results) != len(ops) {
		t.Fatalf("node action %v = %+v, want all ok", ops, res)
	}
	if body, resp := get(t, "http://"+c.api+"/api/actions/query"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/actions/query = %d %q, want 405", resp.StatusCode, body)
	}
}

// (4a) docker kill -s INT: one SIGINT to the backend only, an in-flight callback finishes
// during the drain, and the container exits 0.
func TestSIGINTDrainsAndExitsZero(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", retryFast})
	c.waitReady(t)
	// Start the Node server, then keep a callback in flight across the SIGINT.
	if res, err := c.nodeAction("", "query"); err != nil || !res.OK {
		t.Fatalf("node action query = %+v, %v; want ok", res, err)
	}
	done := make(chan error, 1)
	go func() {
		res, err := c.nodeAction("2s", "query")
		if err == nil && !res.OK {
			err = fmt.Errorf("node action query during drain = %+v, want ok", res)
		}
		done <- err
	}()
	c.waitLog(t, "callback query: sleeping 2s")
	c.kill(t, "INT")
	if err := <-done; err != nil {
		t.Error(err)
	}
	if code := c.wait(t); code != 0 {
		t.Errorf("exit code after SIGINT = %d, want 0", code)
	}
	if got := c.signalLog(t); len(got) != 1 || got[0] != "backend SIGINT" {
		t.Errorf("signal log = %q, want exactly [backend SIGINT] (no node line)", got)
	}
}

// (4b) docker stop: the stock backend is PID 1 with no SIGTERM handler, so the kernel drops
// SIGTERM, Docker waits out the timeout and SIGKILLs it: 137. This is what the shim fixes.
func TestDockerStopTimesOutOnStockImage(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210"})
	c.waitReady(t)
	began := time.Now()
	if _, err := docker("stop", "-t", "2", c.name); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Errorf("docker stop -t 2 took %s, want the full 2s timeout", took)
	}
	if code := c.wait(t); code != 137 {
		t.Errorf("exit code after docker stop = %d, want 137", code)
	}
	if got := c.signalLog(t); len(got) != 1 || got[0] != "backend SIGTERM" {
		t.Errorf("signal log = %q, want exactly [backend SIGTERM]", got)
	}
}

// A second SIGINT during a drain forces exit 1 (facts §4).
func TestSecondSIGINTForcesExitOne(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", "STANDIN_DRAIN_DELAY=60s"})
	c.waitReady(t)
	c.kill(t, "INT")
	c.waitLog(t, "shutting down")
	c.kill(t, "INT")
	if code := c.wait(t); code != 1 {
		t.Errorf("exit code after two SIGINTs = %d, want 1", code)
	}
	c.waitLog(t, "Forcibly shutting down!")
	if got := c.signalLog(t); strings.Join(got, ",") != "backend SIGINT,backend SIGINT" {
		t.Errorf("signal log = %q, want two backend SIGINT lines", got)
	}
}

// Under an init (docker run --init) the backend is not PID 1, which is how the shim runs it:
// unhandled signals then kill it at once (facts §4, §6).
func TestNotPID1(t *testing.T) {
	t.Parallel()
	env := []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210"}
	cases := []struct {
		name  string
		env   []string
		act   func(t *testing.T, c *container)
		code  int
		lines []string
	}{
		{"SIGTERM kills at once", env, func(t *testing.T, c *container) {
			c.waitReady(t)
			c.kill(t, "TERM")
		}, 128 + 15, []string{"backend SIGTERM"}},
		{"SIGINT during startup kills", slices.Concat(env, []string{"STANDIN_STARTUP_DELAY=60s"}), func(t *testing.T, c *container) {
			c.waitLog(t, "starting up")
			c.kill(t, "INT")
		}, 128 + 2, []string{"backend SIGINT"}},
		{"SIGUSR1 is ignored", env, func(t *testing.T, c *container) {
			c.waitReady(t)
			c.kill(t, "USR1")
			c.waitLog(t, "received SIGUSR1")
			c.waitReady(t)
			c.kill(t, "INT")
		}, 0, []string{"backend SIGUSR1", "backend SIGINT"}},
		{"abort is 134", env, func(t *testing.T, c *container) {
			c.waitReady(t)
			post(t, "http://"+c.api+"/test/abort")
		}, 134, nil},
		{"exit code passes through", env, func(t *testing.T, c *container) {
			c.waitReady(t)
			post(t, "http://"+c.api+"/test/exit?code=3")
		}, 3, nil},
		{"STANDIN_EXIT_CODE after startup", slices.Concat(env, []string{"STANDIN_EXIT_CODE=5", "STANDIN_STARTUP_DELAY=0s"}),
			func(t *testing.T, c *container) {}, 5, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, tc.env, "--init")
			tc.act(t, c)
			if code := c.wait(t); code != tc.code {
				t.Errorf("exit code = %d, want %d", code, tc.code)
			}
			if tc.lines == nil {
				return
			}
			if got := c.signalLog(t); strings.Join(got, " ") != strings.Join(tc.lines, " ") {
				t.Errorf("signal log = %q, want %q", got, tc.lines)
			}
		})
	}
}

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: HTTP %d, want 202", url, resp.StatusCode)
	}
}

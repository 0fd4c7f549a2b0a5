// Package standin tests the Convex backend stand-in image built by build.sh: that it has the
// real image's layout, reproduces the seed failure (ECONNREFUSED 127.0.0.1:80 from a Node
// action), and handles signals as docs/convex-facts.md §4 says the real backend does. These are the
// behaviours the shim's own end-to-end tests rely on.
//
// Docker is required: without it these tests fail, they do not skip.
package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/dockertest"
)

// image is the stand-in's tag (dockertest.StandinImage; STANDIN_IMAGE overrides it).
var image = dockertest.StandinImage

type container = dockertest.Container

// start builds the stand-in (once) and runs it with env (KEY=VALUE) and extra docker run
// options; dockertest removes it, with its anonymous /convex/data volume, when the test ends
// and prints its logs on failure.
func start(t *testing.T, env []string, opts ...string) *container {
	t.Helper()
	dockertest.BuildStandin(t)
	return dockertest.Start(t, image, dockertest.Options{Env: env, Docker: opts})
}

const retryFast = "STANDIN_RETRY_BASE_MS=10"

func TestImageLayout(t *testing.T) {
	t.Parallel()
	dockertest.BuildStandin(t)
	out, err := dockertest.Docker("image", "inspect", "-f",
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
	c.WaitReady(t)
	body, resp := dockertest.Get(t, "http://"+c.API+"/version")
	if body != "unknown" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /version = %q (%s), want \"unknown\" (text/plain)", body, resp.Header.Get("Content-Type"))
	}
	if body, _ := dockertest.Get(t, "http://"+c.Site+"/hello"); body != "http action GET /hello\n" {
		t.Errorf("GET site /hello = %q, want it forwarded to /http/hello", body)
	}
}

// (2) The seed failure: with an origin that has no port, Node calls back to 127.0.0.1:80.
func TestSeedFailureReproduced(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1", retryFast})
	c.WaitReady(t)
	res, err := c.NodeAction("", "query")
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
	c.WaitReady(t)
	ops := []string{"query", "mutation", "action", "schedule_job", "storage_store", "storage_get", "storage_delete"}
	res, err := c.NodeAction("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Results) != len(ops) {
		t.Fatalf("node action %v = %+v, want all ok", ops, res)
	}
	if body, resp := dockertest.Get(t, "http://"+c.API+"/api/actions/query"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/actions/query = %d %q, want 405", resp.StatusCode, body)
	}
}

// (4a) docker kill -s INT: one SIGINT to the backend only, an in-flight callback finishes
// during the drain, and the container exits 0.
func TestSIGINTDrainsAndExitsZero(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", retryFast})
	c.WaitReady(t)
	// Start the Node server, then keep a callback in flight across the SIGINT.
	if res, err := c.NodeAction("", "query"); err != nil || !res.OK {
		t.Fatalf("node action query = %+v, %v; want ok", res, err)
	}
	done := make(chan error, 1)
	go func() {
		res, err := c.NodeAction("2s", "query")
		if err == nil && !res.OK {
			err = fmt.Errorf("node action query during drain = %+v, want ok", res)
		}
		done <- err
	}()
	c.WaitLog(t, "callback query: sleeping 2s")
	c.Kill(t, "INT")
	if err := <-done; err != nil {
		t.Error(err)
	}
	if code := c.Wait(t); code != 0 {
		t.Errorf("exit code after SIGINT = %d, want 0", code)
	}
	if got := c.SignalLog(t); len(got) != 1 || got[0] != "backend SIGINT" {
		t.Errorf("signal log = %q, want exactly [backend SIGINT] (no node line)", got)
	}
}

// (4b) docker stop: the stock backend is PID 1 with no SIGTERM handler, so the kernel drops
// SIGTERM, Docker waits out the timeout and SIGKILLs it: 137. This is what the shim fixes.
func TestDockerStopTimesOutOnStockImage(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210"})
	c.WaitReady(t)
	began := time.Now()
	if _, err := dockertest.Docker("stop", "-t", "2", c.Name); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Errorf("docker stop -t 2 took %s, want the full 2s timeout", took)
	}
	if code := c.Wait(t); code != 137 {
		t.Errorf("exit code after docker stop = %d, want 137", code)
	}
	if got := c.SignalLog(t); len(got) != 1 || got[0] != "backend SIGTERM" {
		t.Errorf("signal log = %q, want exactly [backend SIGTERM]", got)
	}
}

// A second SIGINT during a drain forces exit 1 (facts §4).
func TestSecondSIGINTForcesExitOne(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", "STANDIN_DRAIN_DELAY=60s"})
	c.WaitReady(t)
	c.Kill(t, "INT")
	c.WaitLog(t, "shutting down")
	c.Kill(t, "INT")
	if code := c.Wait(t); code != 1 {
		t.Errorf("exit code after two SIGINTs = %d, want 1", code)
	}
	c.WaitLog(t, "Forcibly shutting down!")
	if got := c.SignalLog(t); strings.Join(got, ",") != "backend SIGINT,backend SIGINT" {
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
			c.WaitReady(t)
			c.Kill(t, "TERM")
		}, 128 + 15, []string{"backend SIGTERM"}},
		{"SIGINT during startup kills", slices.Concat(env, []string{"STANDIN_STARTUP_DELAY=60s"}), func(t *testing.T, c *container) {
			c.WaitLog(t, "starting up")
			c.Kill(t, "INT")
		}, 128 + 2, []string{"backend SIGINT"}},
		{"SIGUSR1 is ignored", env, func(t *testing.T, c *container) {
			c.WaitReady(t)
			c.Kill(t, "USR1")
			c.WaitLog(t, "received SIGUSR1")
			c.WaitReady(t)
			c.Kill(t, "INT")
		}, 0, []string{"backend SIGUSR1", "backend SIGINT"}},
		{"abort is 134", env, func(t *testing.T, c *container) {
			c.WaitReady(t)
			c.Post(t, "/test/abort", http.StatusAccepted)
		}, 134, nil},
		{"exit code passes through", env, func(t *testing.T, c *container) {
			c.WaitReady(t)
			c.Post(t, "/test/exit?code=3", http.StatusAccepted)
		}, 3, nil},
		{"STANDIN_EXIT_CODE after startup", slices.Concat(env, []string{"STANDIN_EXIT_CODE=5", "STANDIN_STARTUP_DELAY=0s"}),
			func(t *testing.T, c *container) {}, 5, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, tc.env, "--init")
			tc.act(t, c)
			if code := c.Wait(t); code != tc.code {
				t.Errorf("exit code = %d, want %d", code, tc.code)
			}
			if tc.lines == nil {
				return
			}
			if got := c.SignalLog(t); strings.Join(got, " ") != strings.Join(tc.lines, " ") {
				t.Errorf("signal log = %q, want %q", got, tc.lines)
			}
		})
	}
}

// POST /test/orphans leaves orphans behind. In the stock image the backend is PID 1 and never
// waits for children it did not start, so they stay zombies (facts §5); under docker run
// --init, docker-init reaps them. The shim's own test (e2e/image) expects no zombie either.
func TestOrphansEndpoint(t *testing.T) {
	t.Parallel()
	env := []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210"}
	for _, tc := range []struct {
		name    string
		opts    []string
		zombies bool
	}{
		{"stock image keeps zombies", nil, true},
		{"docker-init reaps them", []string{"--init"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, env, tc.opts...)
			c.WaitReady(t)
			pids := c.Orphans(t, 3, 100*time.Millisecond)
			took := dockertest.Eventually(t, 10*time.Second, "orphans ended", func() (bool, string) {
				ps := c.Processes(t)
				var zombies, alive []int
				for _, p := range ps {
					if slices.Contains(pids, p.PID) {
						if strings.HasPrefix(p.Stat, "Z") {
							zombies = append(zombies, p.PID)
						} else {
							alive = append(alive, p.PID)
						}
					}
				}
				msg := fmt.Sprintf("orphans %v: zombies %v, running %v; ps %+v", pids, zombies, alive, ps)
				if tc.zombies {
					return len(zombies) == len(pids), msg
				}
				return len(zombies) == 0 && len(alive) == 0, msg
			})
			t.Logf("orphans %v, zombies expected %v: settled after %s", pids, tc.zombies, took.Round(time.Millisecond))
			if tc.zombies {
				// Their parent is the backend, PID 1.
				for _, p := range c.Processes(t) {
					if slices.Contains(pids, p.PID) && p.PPID != 1 {
						t.Errorf("orphan %+v: parent %d, want 1 (the backend)", p, p.PPID)
					}
				}
			}
		})
	}
}

// The Node server inherits the backend's environment, NODE_OPTIONS included, and each action
// runs with process.env replaced by upstream's allowlist plus the deployment's variables
// (facts §11): what the shim's Node preload relies on and must survive.
func TestNodeServerEnvironment(t *testing.T) {
	t.Parallel()
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", "CONVEX_SITE_ORIGIN=http://127.0.0.1:3211",
		"NODE_OPTIONS=--max-old-space-size=512", "BACKEND_ONLY=1"})
	c.WaitReady(t)
	res, err := c.NodeActionOK("", "node_options", "heap_limit", "env_keys")
	if err != nil {
		t.Fatal(err)
	}
	var opts string
	var heap int64
	var keys []string
	for i, v := range []any{&opts, &heap, &keys} {
		if err := json.Unmarshal(res.Results[i].Value, v); err != nil {
			t.Fatalf("%s: decode %s: %v", res.Results[i].Op, res.Results[i].Value, err)
		}
	}
	t.Logf("node server: NODE_OPTIONS %q at start, heap_size_limit %d MiB, process.env during the action %q", opts, heap>>20, keys)
	if opts != "--max-old-space-size=512" {
		t.Errorf("NODE_OPTIONS at start = %q, want the backend's --max-old-space-size=512", opts)
	}
	if heap < 512<<20 || heap > 600<<20 {
		t.Errorf("heap_size_limit = %d MiB, want about 512 (--max-old-space-size=512)", heap>>20)
	}
	allowed := []string{"PATH", "PWD", "LANG", "NODE_PATH", "TZ", "UTC", "CONVEX_CLOUD_URL", "CONVEX_SITE_URL"}
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			t.Errorf("process.env during the action has %s, want only %q", k, allowed)
		}
	}
	for _, k := range []string{"PATH", "CONVEX_CLOUD_URL", "CONVEX_SITE_URL"} {
		if !slices.Contains(keys, k) {
			t.Errorf("process.env during the action lacks %s", k)
		}
	}
}

// spyPreload replaces the global fetch from a NODE_OPTIONS --require preload, as the shim's does,
// and logs each call's input type and URL.
const spyPreload = `"use strict";
const original = globalThis.fetch;
globalThis.fetch = function fetch(input, init) {
  const kind = typeof input === "string" ? "string" : input instanceof URL ? "URL" : input instanceof Request ? "Request" : typeof input;
  const url = kind === "Request" ? input.url : String(input);
  process.stderr.write("spy: fetch " + kind + " " + url + "\n");
  return original.call(this, input, init);
};
`

// Callbacks and storage go through the bare global fetch, looked up at each call, with the
// inputs upstream gives it (facts §11): a URL for callbacks, strings for storage upload and
// download, a Request where the action passes one. A preload's wrapper sees every one.
func TestCallbacksUseGlobalFetch(t *testing.T) {
	t.Parallel()
	spy := filepath.Join(t.TempDir(), "spy.cjs")
	if err := os.WriteFile(spy, []byte(spyPreload), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", "CONVEX_SITE_ORIGIN=http://127.0.0.1:3211",
		"NODE_OPTIONS=--require /spy.cjs"}, "-v", spy+":/spy.cjs:ro")
	c.WaitReady(t)
	ops := []string{"query", "storage_store", "storage_get", "query_request", "site_fetch=/hello"}
	res, err := c.NodeActionOK("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Results[4].Value); got != `"http action GET /hello\n"` {
		t.Errorf("site_fetch=/hello = %s, want the HTTP action's reply", got)
	}
	var seen []string
	for _, line := range strings.Split(c.Logs(t), "\n") {
		if rest, ok := strings.CutPrefix(line, "spy: fetch "); ok {
			// Drop the query strings and storage ids, which change each run.
			kind, url, _ := strings.Cut(rest, " ")
			url, _, _ = strings.Cut(url, "?")
			if strings.HasPrefix(url, "http://127.0.0.1:3210/api/storage/") && !strings.HasSuffix(url, "/upload") {
				url = "http://127.0.0.1:3210/api/storage/ID"
			}
			seen = append(seen, kind+" "+url)
		}
	}
	t.Logf("fetches the preload saw: %q", seen)
	want := []string{
		"URL http://127.0.0.1:3210/api/actions/query",
		"URL http://127.0.0.1:3210/api/actions/storage_generate_upload_url",
		"string http://127.0.0.1:3210/api/storage/upload",
		"URL http://127.0.0.1:3210/api/actions/storage_get_url",
		"string http://127.0.0.1:3210/api/storage/ID",
		"Request http://127.0.0.1:3210/api/actions/query",
		"string http://127.0.0.1:3211/hello",
	}
	if !slices.Equal(seen, want) {
		t.Errorf("fetches seen by a NODE_OPTIONS preload:\n got %q\nwant %q", seen, want)
	}
}

// A Node server that does not come up within upstream's 5 s start health check fails every
// Node action with an error saying so (facts §11): a preload that throws, or one that hangs.
func TestNodeStartHealthCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, nodeOptions, want string }{
		{"preload missing", "--require /nonexistent.cjs", "exited before it was ready: exit status 1"},
		{"preload hangs", "--import=data:text/javascript,setInterval(()=>{},1000);await%20new%20Promise(()=>{})",
			"not ready within 5s (the start health check)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, []string{"CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210", "NODE_OPTIONS=" + tc.nodeOptions})
			c.WaitReady(t)
			for i := 1; i <= 2; i++ {
				_, err := c.NodeAction("", "query")
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "every Node action fails") {
					t.Fatalf("node action %d with NODE_OPTIONS=%q: %v, want an error containing %q", i, tc.nodeOptions, err, tc.want)
				}
				t.Logf("node action %d: %v", i, err)
			}
		})
	}
}

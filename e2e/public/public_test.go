// Package public runs the stand-in Convex backend behind a public https origin, as production
// deployments do (Convex's Fly guide: https://<app>.fly.dev; its own-infrastructure guide:
// https://api.my-domain.com behind a reverse proxy; an ingress name on Kubernetes), with a
// second container playing the edge (e2e/edge): TLS for https://convex.example.test with a test
// CA the stock Node trusts through NODE_EXTRA_CA_CERTS, proxying to the backend's 3210, counting
// every request it sees.
//
// Two topologies, on a user-defined Docker network each:
//   - hairpin: the edge has the network alias convex.example.test, so the backend reaches its
//     own public name the long way round, through the edge;
//   - #386 (upstream issue "Hard to setup node actions in kube"): no alias, the name does not
//     resolve inside the container, so a stock backend's Node callbacks fail.
//
// The stock stand-in shows both behaviours; the shimmed image (Dockerfile.backend) must keep
// every callback inside the container in both, leave every other request of user code alone,
// survive a read-only root with no capabilities, and fall back to the public route, saying why
// in one line, when its Node preload cannot install itself.
//
// Docker is required: without it these tests fail, they do not skip.
package public

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/dockertest"
)

const (
	origin = "https://" + dockertest.PublicName
	// siteOrigin is the cloud origin plus /http, as Convex's Fly guide sets it: HTTP actions
	// are served as /http/... on 3210 (facts §11).
	siteOrigin = origin + "/http"
	// caPath is where the edge's CA is mounted in the backend container.
	caPath = "/etc/convex-e2e/ca.pem"
)

// allOps is every callback kind issue 11 names; the storage ones are two requests each but
// storage_delete, which is one (facts §1).
var allOps = []string{"query", "mutation", "action", "schedule_job", "storage_store", "storage_get", "storage_delete"}

// deployment is a backend behind its own edge, on a network of their own.
type deployment struct {
	edge    *dockertest.Edge
	backend *dockertest.Container
	network string
}

// deploy runs image as the backend with the public origins, behind a new edge on a new
// network; with hairpin the edge answers to the public name inside the network too. env and
// docker are added to the backend's.
func deploy(t *testing.T, image string, hairpin bool, env []string, docker ...string) deployment {
	t.Helper()
	net := dockertest.Network(t)
	var aliases []string
	if hairpin {
		aliases = []string{dockertest.PublicName}
	}
	edge := dockertest.StartEdge(t, dockertest.EdgeOptions{Network: net, Aliases: aliases, Upstream: "http://backend:3210"})
	ca := writeFile(t, "ca.pem", edge.CA(t))
	backend := dockertest.Start(t, image, dockertest.Options{
		Env: slices.Concat([]string{
			"CONVEX_CLOUD_ORIGIN=" + origin, "CONVEX_SITE_ORIGIN=" + siteOrigin,
			"NODE_EXTRA_CA_CERTS=" + caPath, "STANDIN_RETRY_BASE_MS=10",
		}, env),
		Docker: slices.Concat([]string{"--network", net, "--network-alias", "backend", "-v", ca + ":" + caPath + ":ro"}, docker),
	})
	backend.WaitReady(t)
	return deployment{edge: edge, backend: backend, network: net}
}

// writeFile writes data to a new file in the test's temp dir, readable by every user (a root
// with no capabilities in the container reads it as "other"), and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs a Node action making ops and fails unless every op succeeded.
func run(t *testing.T, c *dockertest.Container, ops ...string) dockertest.NodeResult {
	t.Helper()
	res, err := c.NodeActionOK("", ops...)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != len(ops) {
		t.Fatalf("node action %v: %d results, want %d", ops, len(res.Results), len(ops))
	}
	return res
}

// value decodes the value of the op-th result into v.
func value(t *testing.T, res dockertest.NodeResult, op int, v any) {
	t.Helper()
	if err := json.Unmarshal(res.Results[op].Value, v); err != nil {
		t.Fatalf("%s: decode %s: %v", res.Results[op].Op, res.Results[op].Value, err)
	}
}

// wantEdgeSaw fails unless the edge served exactly want ("GET https://host/path" each, query
// strings and storage ids dropped, sorted).
func wantEdgeSaw(t *testing.T, e *dockertest.Edge, want ...string) {
	t.Helper()
	got := []string{}
	for _, r := range e.Requests(t) {
		url, _, _ := strings.Cut(r.URL, "?")
		if rest, ok := strings.CutPrefix(url, origin+"/api/storage/"); ok && rest != "upload" {
			url = origin + "/api/storage/ID"
		}
		got = append(got, r.Method+" "+url)
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("the edge served %d requests:\n %q\nwant %d:\n %q", len(got), got, len(want), want)
	}
}

// callbackRequests is what allOps sends to the public origin when it goes the long way round:
// 4 callbacks, storage_store and storage_get two requests each, storage_delete one.
var callbackRequests = []string{
	"POST " + origin + "/api/actions/query",
	"POST " + origin + "/api/actions/mutation",
	"POST " + origin + "/api/actions/action",
	"POST " + origin + "/api/actions/schedule_job",
	"POST " + origin + "/api/actions/storage_generate_upload_url",
	"POST " + origin + "/api/storage/upload",
	"POST " + origin + "/api/actions/storage_get_url",
	"GET " + origin + "/api/storage/ID",
	"POST " + origin + "/api/actions/storage_delete",
}

// repeat is n copies of ops, end to end.
func repeat(ops []string, n int) []string {
	var all []string
	for range n {
		all = append(all, ops...)
	}
	return all
}

// medians is the median duration of each op in res (timed by the Node server), by op name.
func medians(res dockertest.NodeResult) map[string]float64 {
	by := map[string][]float64{}
	for _, r := range res.Results {
		by[r.Op] = append(by[r.Op], r.Ms)
	}
	m := map[string]float64{}
	for op, ms := range by {
		slices.Sort(ms)
		m[op] = ms[len(ms)/2]
	}
	return m
}

// (a) and (c), hairpin: on the stock stand-in every callback crosses the edge, and works;
// through the shim every one stays inside and the edge sees none. The per-callback latency of
// both, timed by the Node server itself, in one run.
func TestHairpin(t *testing.T) {
	t.Parallel()
	stock, shim := dockertest.BuildStandin(t), dockertest.BuildShimImage(t)
	const rounds = 20
	type outcome struct {
		name          string
		deployment    deployment
		medians       map[string]float64
		edgeRequests  []string // what the edge must have served for one round
		slowerMedians map[string]float64
	}
	cases := []*outcome{{name: "stock"}, {name: "shim"}}
	for _, o := range cases {
		image := stock
		if o.name == "shim" {
			image = shim
		}
		d := deploy(t, image, true, nil)
		o.deployment = d
		run(t, d.backend, allOps...) // connections and the Node server warm
		o.medians = medians(run(t, d.backend, repeat(allOps, rounds)...))
		if o.name == "stock" {
			o.edgeRequests = callbackRequests
			// The edge adds 2 ms each way: every callback the stock backend makes pays it.
			d.edge.SetLatency(t, 2*time.Millisecond)
			o.slowerMedians = medians(run(t, d.backend, repeat(allOps, rounds)...))
			d.edge.SetLatency(t, 0)
		}
	}
	for _, o := range cases {
		n := 1 + rounds
		if o.slowerMedians != nil {
			n += rounds
		}
		wantEdgeSaw(t, o.deployment.edge, repeat(o.edgeRequests, n)...)
	}
	for _, ms := range cases[0].slowerMedians {
		if ms < 4 {
			t.Errorf("stock via an edge adding 2 ms each way: a callback's median %.2f ms, want at least 4", ms)
		}
	}
	var parts []string
	var stockSum, shimSum float64
	for _, op := range allOps {
		parts = append(parts, fmt.Sprintf("%s %.2f / %.2f / %.2f", op, cases[0].medians[op], cases[0].slowerMedians[op], cases[1].medians[op]))
		stockSum += cases[0].medians[op]
		shimSum += cases[1].medians[op]
	}
	t.Logf("per-callback latency, ms, median of %d, timed in the Node server; origin %s, hairpin; stock via the edge / stock via the edge +2 ms each way / through the shim: %s; sum of the 7 medians %.2f via the edge, %.2f through the shim (%.1fx)",
		rounds, origin, strings.Join(parts, "; "), stockSum, shimSum, stockSum/shimSum)
}

// (b) and (c), #386: the public name does not resolve inside the container. The stock
// stand-in's callbacks fail with Node's own error; through the shim all of them work.
func TestNoHairpin(t *testing.T) {
	t.Parallel()
	t.Run("stock", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, dockertest.BuildStandin(t), false, nil)
		res, err := d.backend.NodeAction("", allOps...)
		if err != nil {
			t.Fatal(err)
		}
		// storage_get and storage_delete fail for want of a stored file; the first ones
		// show why.
		for _, r := range res.Results[:5] {
			if r.OK || (!strings.Contains(r.Error, "ENOTFOUND "+dockertest.PublicName) && !strings.Contains(r.Error, "EAI_AGAIN "+dockertest.PublicName)) {
				t.Errorf("%s: ok %v, error %q; want getaddrinfo ENOTFOUND (or EAI_AGAIN) %s", r.Op, r.OK, r.Error, dockertest.PublicName)
			}
		}
		if res.OK {
			t.Errorf("node action %v succeeded, want every callback to fail", allOps)
		}
		t.Logf("stock stand-in, %s unreachable inside (#386): %s", origin, res.Results[0].Error)
		wantEdgeSaw(t, d.edge)
	})
	t.Run("shim", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, dockertest.BuildShimImage(t), false, nil)
		run(t, d.backend, allOps...)
		t.Logf("through the shim, %s unreachable inside (#386): all %d callbacks ok", origin, len(allOps))
		wantEdgeSaw(t, d.edge)
	})
}

// (d) Through the shim, what is not a callback is left alone: a user fetch to another host
// reaches it, node:https to the public name crosses the edge, and a user NODE_OPTIONS still
// takes effect. A user fetch to the site URL (an HTTP action) stays inside.
func TestUserTrafficUnchanged(t *testing.T) {
	t.Parallel()
	d := deploy(t, dockertest.BuildShimImage(t), true, []string{"NODE_OPTIONS=--max-old-space-size=512"})
	other := dockertest.StartEdge(t, dockertest.EdgeOptions{Network: d.network, Aliases: []string{"other.example.test"}})
	res := run(t, d.backend,
		"user_fetch=http://other.example.test/hello", "https_get="+origin+"/version",
		"site_fetch=/hello", "heap_limit", "node_options", "query")
	var fetched, version, site, nodeOptions string
	var heap int64
	value(t, res, 0, &fetched)
	value(t, res, 1, &version)
	value(t, res, 2, &site)
	value(t, res, 3, &heap)
	value(t, res, 4, &nodeOptions)
	shown := nodeOptions
	if len(shown) > 80 {
		shown = fmt.Sprintf("%s... (%d bytes)", shown[:80], len(shown))
	}
	t.Logf("through the shim: user fetch of another host %q; node:https GET %s/version %q; fetch(CONVEX_SITE_URL + /hello) %q; heap_size_limit %d MiB; NODE_OPTIONS %q",
		fetched, origin, version, site, heap>>20, shown)
	if fetched != "edge other.example.test: GET /hello\n" {
		t.Errorf("user fetch of http://other.example.test/hello = %q, want the other host's own reply", fetched)
	}
	if version != "unknown" {
		t.Errorf("node:https GET %s/version = %q, want the backend's \"unknown\" through the edge", origin, version)
	}
	if site != "http action GET /hello\n" {
		t.Errorf("fetch(CONVEX_SITE_URL + \"/hello\") = %q, want the HTTP action's reply", site)
	}
	if heap < 512<<20 || heap > 600<<20 {
		t.Errorf("heap_size_limit = %d MiB, want about 512: the user's --max-old-space-size=512 lost", heap>>20)
	}
	if !strings.HasPrefix(nodeOptions, "--max-old-space-size=512 ") {
		t.Errorf("NODE_OPTIONS = %q, want the user's value first, the shim's appended", nodeOptions)
	}
	wantEdgeSaw(t, other, "GET http://other.example.test/hello")
	wantEdgeSaw(t, d.edge, "GET "+origin+"/version")
}

// (e) Through the shim with a read-only root and every capability dropped, as TestHardened in
// e2e/image runs it: the callbacks still stay inside.
func TestHardened(t *testing.T) {
	t.Parallel()
	d := deploy(t, dockertest.BuildShimImage(t), true, nil,
		"--read-only", "--cap-drop", "ALL", "-v", dockertest.Volume(t)+":/convex/data")
	run(t, d.backend, allOps...)
	caps := strings.TrimSpace(d.backend.Exec(t, "grep", "CapEff", "/proc/1/status"))
	t.Logf("read-only root, shim %s: all %d callbacks ok, none at the edge", caps, len(allOps))
	wantEdgeSaw(t, d.edge)
}

// freezeFetch is a user's --require preload that makes globalThis.fetch non-writable and
// non-configurable, so no later preload can replace it. It checks that it did.
const freezeFetch = `"use strict";
Object.defineProperty(globalThis, "fetch", { value: globalThis.fetch, writable: false, configurable: false });
const d = Object.getOwnPropertyDescriptor(globalThis, "fetch");
if (d.writable || d.configurable) throw new Error("freeze-fetch: globalThis.fetch still replaceable");
`

// (f) Through the shim, with the Node preload unable to install itself: Node still starts, the
// callbacks go the public route as they would without the shim (the edge serves them all),
// and the container's log says why in exactly one line.
func TestPreloadFails(t *testing.T) {
	t.Parallel()
	freeze := writeFile(t, "freeze-fetch.cjs", []byte(freezeFetch))
	d := deploy(t, dockertest.BuildShimImage(t), true, []string{"NODE_OPTIONS=--require /etc/convex-e2e/freeze-fetch.cjs"},
		"-v", freeze+":/etc/convex-e2e/freeze-fetch.cjs:ro")
	run(t, d.backend, allOps...)
	wantEdgeSaw(t, d.edge, callbackRequests...)
	var lines []string
	for _, line := range strings.Split(d.backend.Logs(t), "\n") {
		if strings.HasPrefix(line, "convex-shim: node preload: ") {
			lines = append(lines, line)
		}
	}
	t.Logf("preload blocked by a user --require: all %d callbacks ok through the edge; log: %q", len(allOps), lines)
	if len(lines) != 1 || !strings.Contains(lines[0], "fetch") {
		t.Errorf("the log has %d \"convex-shim: node preload: \" lines, want exactly 1, saying what became of fetch: %q", len(lines), lines)
	}
}

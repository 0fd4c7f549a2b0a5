package dockertest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// EdgeImage is the tag BuildEdge gives the test edge (e2e/edge).
var EdgeImage = "convex-e2e-edge:" + checkoutTag()

// PublicName is the made-up public name the edge serves, as https://<app>.fly.dev or an
// ingress host would be; .test is reserved (RFC 2606), so it resolves nowhere but where a
// test's network alias puts it.
const PublicName = "convex.example.test"

var edgeBuild once

// BuildEdge builds the edge image with e2e/edge/build.sh, once per test binary and under the
// build lock, and returns its tag.
func BuildEdge(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	edgeBuild.do(t, func() (string, error) {
		return "", withBuildLock(func() error {
			return run(RepoRoot(), "bash", "e2e/edge/build.sh", EdgeImage)
		})
	})
	return EdgeImage
}

// Network creates a user-defined Docker network, which gives its containers Docker's DNS for
// their names and aliases, and removes it when the test ends (after the containers on it,
// which must be started after this call: cleanups run last-registered first).
func Network(t testing.TB) string {
	t.Helper()
	return create(t, "network", "convex-e2e-net-")
}

// EdgeOptions for StartEdge.
type EdgeOptions struct {
	Network  string   // the Docker network to join
	Aliases  []string // its names on that network (PublicName for hairpin)
	Hosts    []string // names in its certificate; default PublicName
	Upstream string   // EDGE_UPSTREAM: where it proxies; empty, it answers itself
	Latency  time.Duration
}

// Edge is a running test edge; Admin is the host:port of its admin port (9090).
type Edge struct {
	*Container
	Admin string
}

// EdgeRequest is one request an edge served.
type EdgeRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	From   string `json:"from"`
}

// StartEdge runs the edge image (BuildEdge) with o and waits until its admin port answers.
// The container is removed when the test ends.
func StartEdge(t testing.TB, o EdgeOptions) *Edge {
	t.Helper()
	docker := []string{"--network", o.Network, "-p", "127.0.0.1::9090"}
	for _, a := range o.Aliases {
		docker = append(docker, "--network-alias", a)
	}
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = []string{PublicName}
	}
	env := []string{"EDGE_HOSTS=" + strings.Join(hosts, ","), "EDGE_UPSTREAM=" + o.Upstream, "EDGE_LATENCY=" + o.Latency.String()}
	e := &Edge{Container: Start(t, BuildEdge(t), Options{Env: env, Docker: docker, NoPublish: true})}
	var err error
	if e.Admin, err = PublishedPort(e.Name, "9090/tcp"); err != nil {
		t.Fatalf("edge %s: %v (state %s)", e.Name, err, e.State(t))
	}
	e.WaitLog(t, "edge: serving ")
	return e
}

// CA is the PEM of the CA the edge made at start, for NODE_EXTRA_CA_CERTS.
func (e *Edge) CA(t testing.TB) []byte {
	t.Helper()
	return []byte(e.admin(t, "GET", "/ca.pem"))
}

// Requests is every request the edge has served, in order.
func (e *Edge) Requests(t testing.TB) []EdgeRequest {
	t.Helper()
	var seen []EdgeRequest
	body := e.admin(t, "GET", "/requests")
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("edge %s: decode GET /requests %q: %v", e.Name, body, err)
	}
	return seen
}

// SetLatency makes the edge add d each way from now on.
func (e *Edge) SetLatency(t testing.TB, d time.Duration) {
	t.Helper()
	e.admin(t, "POST", "/latency?each_way="+d.String())
}

func (e *Edge) admin(t testing.TB, method, path string) string {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.Admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("edge %s: %s %s: %v", e.Name, method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("edge %s: %s %s: HTTP %d %q %v", e.Name, method, path, resp.StatusCode, body, err)
	}
	return string(body)
}

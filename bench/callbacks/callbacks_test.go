package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convex-shim/convex-shim/bench/internal/benchenv"
)

// roleVar set: this test binary is the runner (re-executed in a private
// network namespace by TestSmoke).
const roleVar = "CALLBACKS_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleVar) == "runner" {
		if err := run(os.Args[1:]); err != nil {
			os.Stderr.WriteString("callbacks: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark with a few callbacks per origin, as
// make bench does (the real shim and edge, real Node, a private network
// namespace): every origin's callbacks reach the backend, the hairpin's all
// cross the edge, and the public origin without the preload fails as
// upstream #386.
func TestSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it makes network and mount namespaces (run make test as root)")
	}
	for _, tool := range []string{"node", "socat", "unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%v: make deps and make bench-deps install it", err)
		}
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/convex-shim", "./e2e/edge")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the shim and the edge: %v\n%s", err, out)
	}
	results := filepath.Join(dir, "results.json")
	cmd := exec.Command("unshare", "--net", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, os.Args[0],
		"-shim", filepath.Join(dir, "convex-shim"), "-edge", filepath.Join(dir, "edge"), "-out", "", "-results", results,
		"-rounds", "1", "-warm", "4", "-n", "10", "-cn", "32", "-storage", "2")
	cmd.Env = append(os.Environ(), roleVar+"=runner")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("runner: %v\n%s", err, out)
	}
	b, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	var runs []Run
	if err := json.Unmarshal(b, &runs); err != nil {
		t.Fatal(err)
	}
	byOrigin := map[string]Run{}
	for _, r := range runs {
		byOrigin[r.Origin] = r
	}
	// warm + n + cn queries, then 2 requests (URL callback, transfer) for
	// each of the 2 warm-up stores, 2 stores and 2 gets.
	const requests = 4 + 10 + 32 + 2*(2+2+2)
	for _, tc := range []struct {
		origin string
		fail   bool
		edge   bool
	}{
		{"direct", false, false},
		{"shim-loopback", false, false},
		{"shim-forwarder", false, false},
		{"shim-public", false, false},
		{"shim-public-off", true, false},
		{"hairpin", false, true},
		{"socat", false, false},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			r, ok := byOrigin[tc.origin]
			if !ok {
				t.Fatalf("no run for %s in %s", tc.origin, b)
			}
			if tc.fail {
				// ENOTFOUND or EAI_AGAIN: the name cannot be resolved.
				if r.Client.OK || !strings.HasPrefix(r.Client.Error, "E") || r.Backend != 0 {
					t.Errorf("want every callback to fail on the name, none reaching the backend: %+v", r)
				}
				return
			}
			if !r.Client.OK || r.Client.Requests != requests || r.Backend != requests {
				t.Errorf("want %d requests answered by the backend: %+v", requests, r)
			}
			if tc.edge && r.Edge != requests {
				t.Errorf("the edge carried %d requests, want %d", r.Edge, requests)
			}
			for _, m := range modes {
				if got := r.Client.Modes[m.key]; got.N == 0 || got.Rate <= 0 || got.P50 <= 0 || got.P99 < got.P50 {
					t.Errorf("mode %s: %+v", m.key, got)
				}
			}
		})
	}
	if text := string(out); !strings.Contains(text, "| shim-public-off | fails: E") || !strings.Contains(text, "### Target") {
		t.Errorf("report:\n%s", text)
	}
}

// Ratios are taken within a round; a failed origin has none.
func TestCollect(t *testing.T) {
	ok := func(origin string, round int, rate, p50 float64) Run {
		return Run{Origin: origin, Round: round, Client: clientOut{OK: true, Modes: map[string]mode{"sequential": {Rate: rate, P50: p50}}}}
	}
	runs := []Run{
		ok("direct", 0, 1000, 500), ok("x", 0, 950, 550),
		ok("direct", 1, 500, 1000), ok("x", 1, 500, 1000),
		ok("direct", 2, 800, 600), ok("x", 2, 400, 1200),
		{Origin: "y", Client: clientOut{Error: "EAI_AGAIN"}},
	}
	s := collect(runs, "x", "sequential")
	if got := benchenv.Median(s.rateX); got != 0.95 {
		t.Errorf("rate ratio median %v, want 0.95 (per round 0.95, 1, 0.5)", got)
	}
	if got := benchenv.Median(s.paceX); got < 0.909 || got > 0.91 {
		t.Errorf("pace ratio median %v, want 500/550", got)
	}
	if y := collect(runs, "y", "sequential"); len(y.rate) != 0 || y.failed != "EAI_AGAIN" {
		t.Errorf("failed origin: %+v", y)
	}
}

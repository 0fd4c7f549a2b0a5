package examples

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The platform examples (Fly, Render, Kubernetes, Railway, Coolify) set public https
// origins, and their files and READMEs say that Node's fetch callbacks to them stay in the
// container. Whether they do is the shim's decision, so the shim is asked rather than the
// claim restated: the binary built from ../cmd/convex-shim runs `--check` with the
// example's environment and nothing else. No backend runs here, so every probe fails and
// --check exits 1; the routing table it prints is what a start with that environment sets
// up (the same parse, cmd/convex-shim/config.go). That the preload then
// carries the calls is shown by cmd/convex-shim's TestNodeRoutes and TestPID1NodePreload and
// preload's TestNodeFetchRouting, and in Docker, with a name the container cannot resolve,
// by TestKubernetesStockImageMechanics.

// preloadAnchor is the top README's section on the fetch preload, which every platform
// README links to.
const preloadAnchor = "README.md#the-fetch-preload-node-callbacks-stay-inside-public-origins-too"

var shimBin struct {
	sync.Once
	dir string
	err error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shimBin.dir != "" {
		os.RemoveAll(shimBin.dir)
	}
	os.Exit(code)
}

// builtShim builds ../cmd/convex-shim once per test binary and returns its path.
func builtShim(t *testing.T) string {
	t.Helper()
	shimBin.Do(func() {
		if shimBin.dir, shimBin.err = os.MkdirTemp("", "convex-shim-examples-"); shimBin.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", shimBin.dir, "../cmd/convex-shim")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shimBin.err = fmt.Errorf("go build ../cmd/convex-shim: %v\n%s", err, out)
		}
	})
	if shimBin.err != nil {
		t.Fatal(shimBin.err)
	}
	return filepath.Join(shimBin.dir, "convex-shim")
}

// shimRoute is one row of `convex-shim --check`: LISTEN, TARGET, FROM (CHECK dropped).
type shimRoute struct{ listen, target, from string }

// shimCheck runs `convex-shim --check` with env as its whole environment and returns the
// rows of its routing table and its notes. Rows are split on runs of two or more spaces,
// as --check aligns them (origins in these files hold no spaces).
func shimCheck(t *testing.T, env map[string]string) (routes []shimRoute, notes []string) {
	t.Helper()
	cmd := exec.Command(builtShim(t), "--check")
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	start := time.Now()
	out, err := cmd.Output()
	t.Logf("convex-shim --check with %v (%v, %v):\n%s", cmd.Env, time.Since(start).Round(time.Millisecond), err, out)
	if code := cmd.ProcessState.ExitCode(); code != 0 && code != exitCheckFailed {
		t.Fatalf("convex-shim --check exited %d (2 is a usage error: the file's environment is refused)", code)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "LISTEN ") {
		t.Fatalf("convex-shim --check printed no routing table")
	}
	cols := regexp.MustCompile(` {2,}`)
	for _, l := range lines[1:] {
		if n, ok := strings.CutPrefix(l, "note: "); ok {
			notes = append(notes, n)
			continue
		}
		if f := cols.Split(l, 4); len(f) == 4 {
			routes = append(routes, shimRoute{f[0], f[1], f[2]})
		}
	}
	return routes, notes
}

// exitCheckFailed is --check's exit code when a route does not answer (--help).
const exitCheckFailed = 1

// checkPublicOrigin asserts that env's CONVEX_CLOUD_ORIGIN is a public https origin (a DNS
// name, not an address or localhost) and that the shim started with env keeps Node's fetch
// calls to it, and to CONVEX_SITE_ORIGIN, in the container: the cloud origin to
// 127.0.0.1:3210; a site origin that is the cloud origin plus /http by that same route (to
// /http on 3210), any other to 127.0.0.1:3211. It returns the routing table, and checks
// dir's README with readmeSaysPreload.
func checkPublicOrigin(t *testing.T, dir string, env map[string]string) []shimRoute {
	t.Helper()
	cloud, site := env["CONVEX_CLOUD_ORIGIN"], env["CONVEX_SITE_ORIGIN"]
	u, err := url.Parse(cloud)
	if err != nil || u.Scheme != "https" || u.Path != "" || !strings.Contains(u.Hostname(), ".") ||
		strings.HasSuffix(u.Hostname(), ".localhost") {
		t.Errorf("CONVEX_CLOUD_ORIGIN = %q: want a public https origin such as https://convex.example.com (%v)", cloud, err)
	} else if _, err := netip.ParseAddr(u.Hostname()); err == nil {
		t.Errorf("CONVEX_CLOUD_ORIGIN = %q: want a public name, not an address", cloud)
	}
	want := []shimRoute{{"fetch " + cloud, "127.0.0.1:3210", "CONVEX_CLOUD_ORIGIN (node preload)"}}
	if site != "" && site != cloud+"/http" {
		want = append(want, shimRoute{"fetch " + site, "127.0.0.1:3211", "CONVEX_SITE_ORIGIN (node preload)"})
	}
	routes, notes := shimCheck(t, env)
	for _, w := range want {
		if !slices.Contains(routes, w) {
			t.Errorf("convex-shim with this environment does not route Node's fetch calls as %+v; its table: %+v", w, routes)
		}
	}
	for _, r := range routes {
		if strings.HasPrefix(r.listen, "fetch ") && !strings.HasPrefix(r.target, "127.0.0.1:") {
			t.Errorf("route %+v: not inside the container", r)
		}
	}
	stays := "CONVEX_CLOUD_ORIGIN is " + cloud + ": Node's fetch calls to it stay in the container"
	if !slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, stays) }) {
		t.Errorf("convex-shim's notes %q lack %q", notes, stays)
	}

	readmeSaysPreload(t, dir)
	return routes
}

// readmeSaysPreload checks that dir/README.md says which callbacks to a public origin stay
// inside (fetch, to 127.0.0.1:3210) and which still go out (node:https and other clients,
// the backend's OIDC discovery), and links to the top README's preload section.
func readmeSaysPreload(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(data)), " ")
	rel, _ := filepath.Rel(dir, ".")
	link := filepath.ToSlash(filepath.Join(rel, "..", preloadAnchor))
	for _, w := range []string{"](" + link + ")", "127.0.0.1:3210", "fetch", "node:https", "OIDC", "#386"} {
		if !strings.Contains(text, w) {
			t.Errorf("%s/README.md lacks %q: it says which callbacks stay inside (fetch, to 127.0.0.1:3210), which still go out (node:https and other clients, the backend's OIDC discovery) and links to the preload section (%s)", dir, w, link)
		}
	}
	top, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(top), "\n### The fetch preload (Node callbacks stay inside, public origins too)\n") {
		t.Errorf("../README.md has no section for the anchor %s", preloadAnchor)
	}
}

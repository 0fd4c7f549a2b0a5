package examples

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
)

// These tests cannot deploy to Fly, Render or a cluster. They parse each file and
// check that the fields that matter hold the values its README states, and that
// the README states them (so neither can drift alone).

// The shim's defaults (cmd/convex-shim --help), used where a file does not set them.
const (
	defaultGrace        = 8 * time.Second
	defaultCleanupGrace = 2 * time.Second
	wantStock           = "ghcr.io/get-convex/convex-backend:"
)

// shimDuration parses a duration as convex-shim does: a Go duration or whole seconds.
func shimDuration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %q is neither a Go duration nor whole seconds", what, s)
	}
	return d
}

// checkGrace asserts that the shim's deadline, and its cleanup of leftovers after
// the backend exits, both end within the platform's own SIGKILL deadline.
func checkGrace(t *testing.T, env map[string]string, platformTimeout time.Duration, platformField string) (grace time.Duration) {
	t.Helper()
	grace, cleanup := defaultGrace, defaultCleanupGrace
	if v, ok := env["CONVEX_SHIM_GRACE"]; ok {
		grace = shimDuration(t, "CONVEX_SHIM_GRACE", v)
	} else {
		t.Errorf("CONVEX_SHIM_GRACE is not set: say it explicitly next to %s", platformField)
	}
	if v, ok := env["CONVEX_SHIM_CLEANUP_GRACE"]; ok {
		cleanup = shimDuration(t, "CONVEX_SHIM_CLEANUP_GRACE", v)
	}
	if grace <= 0 || grace >= platformTimeout {
		t.Errorf("CONVEX_SHIM_GRACE %v must be above 0 and below %s %v, or the platform kills before the shim ends things", grace, platformField, platformTimeout)
	}
	if grace+cleanup > platformTimeout {
		t.Errorf("CONVEX_SHIM_GRACE %v + cleanup grace %v exceeds %s %v", grace, cleanup, platformField, platformTimeout)
	}
	return grace
}

// readmeMentions asserts that dir/README.md mentions every value, as a whole word.
func readmeMentions(t *testing.T, dir string, values ...string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatalf("every example has a README: %v", err)
	}
	for _, v := range values {
		re := regexp.MustCompile(`(^|[^\w.])` + regexp.QuoteMeta(v) + `($|[^\w])`)
		if !re.Match(data) {
			t.Errorf("%s/README.md does not mention %q, which its file uses", dir, v)
		}
	}
}

// readmeChecked lists the example directories whose README the tests below hold to
// their files. A new example must be added here (with its checks).
var readmeChecked = []string{"docker-compose", "fly", "render", "kubernetes",
	"compose-stock-image", "kubernetes/stock-image", // these two: stock_test.go
	"railway", "coolify"} // these two: platform_test.go

func TestEveryReadmeIsChecked(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "README.md" {
			return err
		}
		if dir := filepath.Dir(path); !slices.Contains(readmeChecked, filepath.ToSlash(dir)) {
			t.Errorf("%s has no test that holds it to its files: add %q to readmeChecked and check its values", path, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range readmeChecked {
		if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
}

// requireDockerfile asserts that path (relative to this directory) is the
// repository's Dockerfile.backend.
func requireDockerfile(t *testing.T, what, path string) {
	t.Helper()
	want, _ := filepath.Abs("../Dockerfile.backend")
	got, _ := filepath.Abs(path)
	if got != want {
		t.Errorf("%s = %s, want the repository's Dockerfile.backend", what, path)
	}
	if _, err := os.Stat(got); err != nil {
		t.Error(err)
	}
}

// ---- docker-compose ----

// interpolate resolves compose's ${VAR:-default} and ${VAR} as if env were the whole
// environment, innermost first, so a default may hold another reference (Compose v2 expands
// those; docker-compose v1 does not, see TestComposeV1NestedDefault).
func interpolate(s string, env map[string]string) string {
	ref := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^${}]*))?\}`)
	for {
		next := ref.ReplaceAllStringFunc(s, func(m string) string {
			sub := ref.FindStringSubmatch(m)
			if v, ok := env[sub[1]]; ok && (v != "" || sub[2] == "") {
				return v
			}
			return sub[3]
		})
		if next == s {
			return s
		}
		s = next
	}
}

// composeEnv is a service's environment, in either of compose's forms: a list of NAME=VALUE
// or NAME, or a mapping. A bare NAME (passed through from the environment, unset when it is
// not set there) is not in the map.
type composeEnv map[string]string

func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	*e = composeEnv{}
	switch n.Kind {
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if name, value, ok := strings.Cut(item.Value, "="); ok {
				(*e)[name] = value
			}
		}
		return nil
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			(*e)[k] = v
		}
		return nil
	}
	return fmt.Errorf("line %d: environment is neither a list nor a mapping", n.Line)
}

// composeFileT is what the tests read of a compose file: the fields of both examples.
type composeFileT struct {
	Services map[string]struct {
		Build struct {
			Context, Dockerfile, Target string
			Args                        map[string]string
		}
		Image           string
		NetworkMode     string `yaml:"network_mode"`
		Entrypoint      []string
		Command         []string
		Restart         string
		StopSignal      string `yaml:"stop_signal"`
		StopGracePeriod string `yaml:"stop_grace_period"`
		Ports           []string
		Volumes         []string
		Environment     composeEnv
		Healthcheck     struct {
			Test    []string
			Timeout string
		}
		DependsOn map[string]struct{ Condition string } `yaml:"depends_on"`
	}
	Volumes map[string]any
}

// loadCompose parses the compose file at path with every ${VAR:-default} at its default.
func loadCompose(t *testing.T, path string) composeFileT {
	t.Helper()
	var f composeFileT
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(interpolate(string(raw), nil)), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkComposeBackend checks what both compose files' backend services must hold: no
// stop_signal, a stop_grace_period above the shim's grace (checkGrace, whose result it
// returns), 3210 and 3211 published.
func checkComposeBackend(t *testing.T, f composeFileT) (grace time.Duration) {
	t.Helper()
	b := f.Services["backend"]
	if b.StopSignal != "" {
		t.Errorf("backend stop_signal %q: none is needed, the shim translates SIGTERM", b.StopSignal)
	}
	stopGrace, err := time.ParseDuration(b.StopGracePeriod)
	if err != nil {
		t.Fatalf("stop_grace_period %q: %v", b.StopGracePeriod, err)
	}
	grace = checkGrace(t, b.Environment, stopGrace, "stop_grace_period")
	for _, p := range []string{":3210:3210", ":3211:3211"} {
		if !slices.ContainsFunc(b.Ports, func(s string) bool { return strings.HasSuffix(s, p) }) {
			t.Errorf("backend ports %q: none ends in %s", b.Ports, p)
		}
	}
	return grace
}

func TestComposeFile(t *testing.T) {
	f := loadCompose(t, composeFile)
	for name, svc := range f.Services {
		if svc.NetworkMode != "" {
			t.Errorf("service %s shares network_mode %q: the port80-proxy sidecar is what this file replaces", name, svc.NetworkMode)
		}
	}
	b, ok := f.Services["backend"]
	if !ok {
		t.Fatal("no backend service")
	}
	requireDockerfile(t, "backend build", filepath.Join("docker-compose", b.Build.Context, b.Build.Dockerfile))
	if b.Build.Target != "backend" {
		t.Errorf("build target defaults to %q, want backend (the shim built from source)", b.Build.Target)
	}
	if !strings.HasPrefix(b.Build.Args["BASE_IMAGE"], wantStock) {
		t.Errorf("BASE_IMAGE defaults to %q, want %s...", b.Build.Args["BASE_IMAGE"], wantStock)
	}
	grace := checkComposeBackend(t, f)
	if got := b.Environment["CONVEX_CLOUD_ORIGIN"]; got != "http://127.0.0.1:3210" {
		t.Errorf("CONVEX_CLOUD_ORIGIN defaults to %q, want http://127.0.0.1:3210 (Convex's default: the backend itself)", got)
	}
	if !slices.Contains(b.Volumes, "data:/convex/data") {
		t.Errorf("backend volumes %q: want data:/convex/data", b.Volumes)
	}
	if _, ok := f.Volumes["data"]; !ok {
		t.Error("the data volume is not declared")
	}
	if want := []string{"CMD", "/usr/local/bin/convex-shim", "--check"}; !slices.Equal(b.Healthcheck.Test, want) {
		t.Errorf("backend healthcheck %q, want %q", b.Healthcheck.Test, want)
	}
	d, ok := f.Services["dashboard"]
	if !ok {
		t.Fatal("no dashboard service")
	}
	if !strings.HasPrefix(d.Image, "ghcr.io/get-convex/convex-dashboard:") {
		t.Errorf("dashboard image %q", d.Image)
	}
	if !slices.ContainsFunc(d.Ports, func(s string) bool { return strings.HasSuffix(s, ":6791:6791") }) {
		t.Errorf("dashboard ports %q: want 6791", d.Ports)
	}
	if d.DependsOn["backend"].Condition != "service_healthy" {
		t.Errorf("dashboard depends_on %v: want backend service_healthy", d.DependsOn)
	}
	readmeSaysPreload(t, "docker-compose") // its .env example is a public origin
	readmeMentions(t, "docker-compose", b.StopGracePeriod, grace.String(), "SIGTERM",
		"3210", "3211", "6791", "/convex/data", "http://127.0.0.1:${PORT:-3210}", "PORT=8080", "--check")
}

// ---- Fly.io ----

func TestFlyToml(t *testing.T) {
	var f struct {
		App         string
		KillSignal  string `toml:"kill_signal"`
		KillTimeout any    `toml:"kill_timeout"` // whole seconds or a duration string
		Build       struct {
			Dockerfile string
			Args       map[string]string
		}
		Env    map[string]string
		Mounts []struct{ Source, Destination string }
		HTTP   struct {
			InternalPort int `toml:"internal_port"`
			Checks       []struct{ Method, Path string }
		} `toml:"http_service"`
	}
	if _, err := toml.DecodeFile("fly/fly.toml", &f); err != nil {
		t.Fatal(err)
	}
	if f.KillSignal != "SIGINT" && f.KillSignal != "SIGTERM" {
		t.Errorf("kill_signal = %q, want SIGINT or SIGTERM (both become one SIGINT to the backend)", f.KillSignal)
	}
	var timeout time.Duration
	var timeoutText string
	switch v := f.KillTimeout.(type) {
	case int64:
		timeout, timeoutText = time.Duration(v)*time.Second, strconv.FormatInt(v, 10)
	case string:
		var err error
		if timeout, err = time.ParseDuration(v); err != nil {
			t.Fatalf("kill_timeout %q: %v", v, err)
		}
		timeoutText = v
	default:
		t.Fatalf("kill_timeout must be set explicitly (Fly's default 5s is below the shim's grace); got %#v", v)
	}
	grace := checkGrace(t, f.Env, timeout, "kill_timeout")
	requireDockerfile(t, "[build] dockerfile", filepath.Join("fly", f.Build.Dockerfile))
	if !strings.HasPrefix(f.Build.Args["BASE_IMAGE"], wantStock) {
		t.Errorf("[build.args] BASE_IMAGE = %q, want %s...", f.Build.Args["BASE_IMAGE"], wantStock)
	}
	if f.HTTP.InternalPort != 3210 {
		t.Errorf("internal_port = %d, want 3210", f.HTTP.InternalPort)
	}
	if !slices.ContainsFunc(f.Mounts, func(m struct{ Source, Destination string }) bool { return m.Destination == "/convex/data" }) {
		t.Errorf("mounts %v: none at /convex/data", f.Mounts)
	}
	if f.Env["TMPDIR"] != "/convex/data/tmp" {
		t.Errorf("TMPDIR = %q, want /convex/data/tmp", f.Env["TMPDIR"])
	}
	if !slices.ContainsFunc(f.HTTP.Checks, func(c struct{ Method, Path string }) bool { return c.Method == "GET" && c.Path == "/version" }) {
		t.Errorf("http_service.checks %v: want GET /version", f.HTTP.Checks)
	}
	origin := "https://" + f.App + ".fly.dev"
	if f.Env["CONVEX_CLOUD_ORIGIN"] != origin || f.Env["CONVEX_SITE_ORIGIN"] != origin+"/http" {
		t.Errorf("origins %q, %q: want %s and %s/http (Convex's Fly instructions)", f.Env["CONVEX_CLOUD_ORIGIN"], f.Env["CONVEX_SITE_ORIGIN"], origin, origin)
	}
	checkPublicOrigin(t, "fly", f.Env)
	readmeMentions(t, "fly", f.KillSignal, timeoutText, grace.String(), "3210", "/convex/data",
		"/convex/data/tmp", "/version", "subreaper")
}

// ---- Render ----

type renderEnv struct {
	Key, Value string
}

func TestRenderYaml(t *testing.T) {
	var f struct {
		Services []struct {
			Type, Name, Runtime, Plan, Repo string
			DockerfilePath                  string `yaml:"dockerfilePath"`
			DockerContext                   string `yaml:"dockerContext"`
			MaxShutdownDelaySeconds         int    `yaml:"maxShutdownDelaySeconds"`
			HealthCheckPath                 string `yaml:"healthCheckPath"`
			Disk                            struct {
				Name      string
				MountPath string `yaml:"mountPath"`
				SizeGB    int    `yaml:"sizeGB"`
			}
			EnvVars []renderEnv `yaml:"envVars"`
		}
	}
	raw, err := os.ReadFile("render/render.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt field would be silently ignored by Render's parser too
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	if len(f.Services) != 1 {
		t.Fatalf("%d services, want 1", len(f.Services))
	}
	s := f.Services[0]
	if s.Type != "web" || s.Runtime != "docker" {
		t.Errorf("type %q runtime %q, want a docker web service", s.Type, s.Runtime)
	}
	// Paths in a Blueprint are relative to the repository root, where render.yaml goes.
	requireDockerfile(t, "dockerfilePath", filepath.Join("..", s.DockerfilePath))
	if filepath.Clean(s.DockerContext) != "." {
		t.Errorf("dockerContext %q, want the repository root", s.DockerContext)
	}
	if s.MaxShutdownDelaySeconds < 1 || s.MaxShutdownDelaySeconds > 300 {
		t.Errorf("maxShutdownDelaySeconds %d: Render allows 1 to 300", s.MaxShutdownDelaySeconds)
	}
	env := map[string]string{}
	for _, e := range s.EnvVars {
		env[e.Key] = e.Value
	}
	grace := checkGrace(t, env, time.Duration(s.MaxShutdownDelaySeconds)*time.Second, "maxShutdownDelaySeconds")
	if s.HealthCheckPath != "/version" {
		t.Errorf("healthCheckPath %q, want /version", s.HealthCheckPath)
	}
	if s.Disk.MountPath != "/convex/data" {
		t.Errorf("disk mountPath %q, want /convex/data", s.Disk.MountPath)
	}
	if env["PORT"] != "3210" {
		t.Errorf("PORT = %q, want 3210: Render routes to PORT and the backend's API port is fixed", env["PORT"])
	}
	// Render passes env vars to docker build as build args: BASE_IMAGE pins the release.
	if img := env["BASE_IMAGE"]; !strings.HasPrefix(img, wantStock) || strings.HasSuffix(img, ":latest") {
		t.Errorf("BASE_IMAGE = %q, want a pinned %s<release>", img, wantStock)
	}
	if !strings.HasPrefix(s.Repo, "https://") || !strings.HasSuffix(s.Repo, "/convex-shim") {
		t.Errorf("repo %q, want the URL of a fork of convex-shim (the build needs its sources)", s.Repo)
	}
	origin := "https://" + s.Name + ".onrender.com"
	if env["CONVEX_CLOUD_ORIGIN"] != origin || env["CONVEX_SITE_ORIGIN"] != origin+"/http" {
		t.Errorf("origins %q, %q: want %s and %s/http", env["CONVEX_CLOUD_ORIGIN"], env["CONVEX_SITE_ORIGIN"], origin, origin)
	}
	checkPublicOrigin(t, "render", env)
	readmeMentions(t, "render", "maxShutdownDelaySeconds: "+strconv.Itoa(s.MaxShutdownDelaySeconds),
		grace.String(), "SIGTERM", "3210", "/convex/data", "/version",
		"dockerfilePath: "+s.DockerfilePath, "dockerContext: "+s.DockerContext, "repo:", "fork", "zero-downtime",
		"BASE_IMAGE", env["BASE_IMAGE"])
}

// ---- Kubernetes ----

// k8sDocs decodes every YAML document of every *.yaml file directly in dir.
func k8sDocs(t *testing.T, dir string) map[string][]*yaml.Node {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	docs := map[string][]*yaml.Node{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			var head struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string
				Metadata   struct{ Name string }
			}
			if err := n.Decode(&head); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", file)
			}
			docs[head.Kind] = append(docs[head.Kind], &n)
		}
		f.Close()
	}
	return docs
}

type k8sProbe struct {
	Exec           *struct{ Command []string }
	HTTPGet        *struct{ Path, Port string } `yaml:"httpGet"`
	TimeoutSeconds int                          `yaml:"timeoutSeconds"`
}

// checkStep bounds each step of `convex-shim --check` (cmd/convex-shim/check.go).
const checkStep = 3 * time.Second

// checkWorst is the longest `convex-shim --check` takes for routes, its table's rows, probed
// one after another: a forward three steps in a row (connect to the backend, connect through
// the forward, read the answer), a fetch-preload route or a bare backend two (connect, read).
func checkWorst(routes []shimRoute) time.Duration {
	var d time.Duration
	for _, r := range routes {
		if strings.HasPrefix(r.listen, "fetch ") || r.target == "-" {
			d += 2 * checkStep
		} else {
			d += 3 * checkStep
		}
	}
	return d
}

// checkProbes checks the startup, readiness and liveness probes of the backend container:
// each is GET /version on 3210, or exec shim --check with a timeout above --check's worst
// case for routes, the table the shim prints with the container's environment (the
// kubelet's default is 1s, and a probe that times out fails).
func checkProbes(t *testing.T, shim string, routes []shimRoute, startup, readiness, liveness *k8sProbe) {
	t.Helper()
	for name, p := range map[string]*k8sProbe{"startupProbe": startup, "readinessProbe": readiness, "livenessProbe": liveness} {
		switch {
		case p == nil:
			t.Errorf("no %s", name)
		case p.HTTPGet != nil:
			if p.HTTPGet.Path != "/version" || (p.HTTPGet.Port != "api" && p.HTTPGet.Port != "3210") {
				t.Errorf("%s: GET %s on %s, want /version on 3210", name, p.HTTPGet.Path, p.HTTPGet.Port)
			}
		case p.Exec != nil:
			if !slices.Equal(p.Exec.Command, []string{shim, "--check"}) {
				t.Errorf("%s: exec %q, want [%s --check]", name, p.Exec.Command, shim)
			}
			if worst := checkWorst(routes); time.Duration(p.TimeoutSeconds)*time.Second <= worst {
				t.Errorf("%s: timeoutSeconds %d, want above --check's worst case for its %d routes, %v", name, p.TimeoutSeconds, len(routes), worst)
			}
		default:
			t.Errorf("%s: neither httpGet nor exec", name)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	docs := k8sDocs(t, "kubernetes")
	// Variants in subdirectories (kubernetes/stock-image/, ...) must at least parse;
	// their own values are theirs to test.
	subdirs, _ := filepath.Glob("kubernetes/*/")
	for _, d := range subdirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			k8sDocs(t, d)
		}
	}
	for kind, n := range map[string]int{"Deployment": 1, "Service": 1, "PersistentVolumeClaim": 1} {
		if len(docs[kind]) != n {
			t.Fatalf("%d %s, want %d", len(docs[kind]), kind, n)
		}
	}

	var dep k8sDeployment
	var svc struct {
		Spec struct {
			Selector map[string]string
			Ports    []struct {
				Name       string
				Port       int
				TargetPort string `yaml:"targetPort"`
			}
		}
	}
	var pvc struct {
		Metadata struct{ Name string }
		Spec     struct {
			AccessModes []string `yaml:"accessModes"`
			Resources   struct {
				Requests struct{ Storage string }
			}
		}
	}
	for _, d := range []struct {
		n *yaml.Node
		v any
	}{{docs["Deployment"][0], &dep}, {docs["Service"][0], &svc}, {docs["PersistentVolumeClaim"][0], &pvc}} {
		if err := d.n.Decode(d.v); err != nil {
			t.Fatal(err)
		}
	}

	spec := dep.Spec.Template.Spec
	if dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != "Recreate" {
		t.Errorf("replicas %d, strategy %q: want 1 and Recreate (one backend owns the ReadWriteOnce volume)", dep.Spec.Replicas, dep.Spec.Strategy.Type)
	}
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Metadata.Labels[k] != v || svc.Spec.Selector[k] != v {
			t.Errorf("label %s=%s: the Deployment's selector, its pod labels and the Service's selector disagree", k, v)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1: the shim replaces the sidecar", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !strings.Contains(c.Image, "/convex-backend-shim:") {
		t.Errorf("image %q, want the image built from Dockerfile.backend (convex-backend-shim)", c.Image)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["api"] != 3210 || ports["site"] != 3211 {
		t.Errorf("container ports %v, want api 3210 and site 3211", ports)
	}
	for _, p := range svc.Spec.Ports {
		if ports[p.TargetPort] != p.Port {
			t.Errorf("Service port %s %d -> %q: not the container's port %d", p.Name, p.Port, p.TargetPort, ports[p.TargetPort])
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	grace := checkGrace(t, env, time.Duration(spec.TerminationGracePeriodSeconds)*time.Second, "terminationGracePeriodSeconds")
	routes := checkPublicOrigin(t, "kubernetes", env)
	var claim string
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/convex/data" {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.PersistentVolumeClaim != nil {
					claim = v.PersistentVolumeClaim.ClaimName
				}
			}
		}
	}
	if claim == "" || claim != pvc.Metadata.Name {
		t.Errorf("/convex/data is mounted from claim %q, want the PersistentVolumeClaim %q", claim, pvc.Metadata.Name)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []string{"ReadWriteOnce"}) {
		t.Errorf("PVC accessModes %v, want ReadWriteOnce", pvc.Spec.AccessModes)
	}
	checkProbes(t, "/usr/local/bin/convex-shim", routes, c.StartupProbe, c.ReadinessProbe, c.LivenessProbe)
	readmeMentions(t, "kubernetes", "terminationGracePeriodSeconds: "+strconv.Itoa(spec.TerminationGracePeriodSeconds),
		grace.String(), "SIGTERM", "3210", "3211", "/convex/data", pvc.Spec.Resources.Requests.Storage,
		env["CONVEX_CLOUD_ORIGIN"], env["CONVEX_SITE_ORIGIN"], "--check", "/version", "Recreate", "subreaper")
}

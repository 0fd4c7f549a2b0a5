package examples

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/dockertest"
	"gopkg.in/yaml.v3"
)

// The two ways to run convex-shim on the STOCK backend image, with no image of
// one's own (issue 7): compose-stock-image/ and kubernetes/stock-image/. Each file
// is parsed and held to its README; then each is run for real on the stand-in for
// the stock image (dockertest.StandinImage, built FROM scratch by e2e/standin/build.sh),
// with the shim-only image built from Dockerfile.backend (target shim-prebuilt: the
// classic builder, nothing pulled), using internal/dockertest and compose_test.go's
// checkCallbacks and stopDrains.

const (
	stockComposeFile = "compose-stock-image/docker-compose.yml"
	stockK8sDir      = "kubernetes/stock-image"
	// shimPath is where both examples put the binary and run it from.
	shimPath = "/shim/convex-shim"
)

// nodeOps are the callbacks each test makes: every kind, storage round trip included.
var nodeOps = []string{"query", "mutation", "action", "storage_store", "storage_get"}

// The forward each test's callbacks to http://127.0.0.1 go through: the startup line and
// the line naming each connection (CONVEX_SHIM_VERBOSE).
const (
	defaultForward = "forwarding 127.0.0.1:80 -> 127.0.0.1:3210 (default)"
	throughForward = "forward: 127.0.0.1:80 -> 127.0.0.1:3210: client 127.0.0.1:"
)

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// mountRW reports whether the container has a mount at dest and whether it is writable.
func mountRW(t *testing.T, ctr, dest string) (found, rw bool) {
	t.Helper()
	out, err := dockertest.Inspect(ctr, `{{range .Mounts}}{{.Destination}} {{.RW}}{{"\n"}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if d, v, ok := strings.Cut(strings.TrimSpace(l), " "); ok && d == dest {
			return true, v == "true"
		}
	}
	return false, false
}

// ---- compose on the stock image ----

func TestComposeStockImageFile(t *testing.T) {
	f := loadCompose(t, stockComposeFile)
	inst, ok := f.Services["shim-install"]
	if !ok {
		t.Fatal("no shim-install service")
	}
	requireDockerfile(t, "shim-install build", filepath.Join("compose-stock-image", inst.Build.Context, inst.Build.Dockerfile))
	if inst.Build.Target != "shim" {
		t.Errorf("shim-install build target defaults to %q, want shim (the shim-only image)", inst.Build.Target)
	}
	if !slices.Equal(inst.Command, []string{"--install", "/shim"}) {
		t.Errorf("shim-install command %q, want [--install /shim]", inst.Command)
	}
	if inst.Restart != "no" {
		t.Errorf("shim-install restart %q, want \"no\": it is a one-shot", inst.Restart)
	}
	if !slices.Contains(inst.Volumes, "shim:/shim") {
		t.Errorf("shim-install volumes %q, want shim:/shim (writable)", inst.Volumes)
	}

	b, ok := f.Services["backend"]
	if !ok {
		t.Fatal("no backend service")
	}
	if b.Build.Context != "" || !strings.HasPrefix(b.Image, wantStock) {
		t.Errorf("backend image %q (build %q): want the stock %s... image, not a build", b.Image, b.Build.Context, wantStock)
	}
	if want := []string{shimPath, "--", "./run_backend.sh"}; !slices.Equal(b.Entrypoint, want) {
		t.Errorf("backend entrypoint %q, want %q", b.Entrypoint, want)
	}
	if len(b.Command) != 0 {
		t.Errorf("backend command %q: none, so docker run arguments reach run_backend.sh as in the stock image", b.Command)
	}
	if c := b.DependsOn["shim-install"].Condition; c != "service_completed_successfully" {
		t.Errorf("backend depends_on shim-install condition %q, want service_completed_successfully", c)
	}
	if !slices.Contains(b.Volumes, "shim:/shim:ro") || !slices.Contains(b.Volumes, "data:/convex/data") {
		t.Errorf("backend volumes %q, want shim:/shim:ro and data:/convex/data", b.Volumes)
	}
	for _, v := range []string{"shim", "data"} {
		if _, ok := f.Volumes[v]; !ok {
			t.Errorf("volume %s is not declared", v)
		}
	}
	grace := checkComposeBackend(t, f)
	if got := b.Environment["CONVEX_CLOUD_ORIGIN"]; got != "http://127.0.0.1" {
		t.Errorf("CONVEX_CLOUD_ORIGIN defaults to %q, want http://127.0.0.1 (port 80, the shim's default forward)", got)
	}
	if want := []string{"CMD", shimPath, "--check"}; !slices.Equal(b.Healthcheck.Test, want) {
		t.Errorf("backend healthcheck %q, want %q", b.Healthcheck.Test, want)
	}
	if d := f.Services["dashboard"]; d.DependsOn["backend"].Condition != "service_healthy" {
		t.Errorf("dashboard depends_on %v: want backend service_healthy", d.DependsOn)
	}
	readmeSaysPreload(t, "compose-stock-image")
	readmeMentions(t, "compose-stock-image", "stop_grace_period: "+b.StopGracePeriod, "CONVEX_SHIM_GRACE: "+grace.String(),
		"SIGTERM", "--install /shim", "shim:/shim:ro", "service_completed_successfully",
		`entrypoint: ["/shim/convex-shim", "--", "./run_backend.sh"]`, `["CMD", "/shim/convex-shim", "--check"]`,
		"http://127.0.0.1", "shim-prebuilt", "/convex/data", "3210", "3211")
}

// TestComposeStockImageUp brings compose-stock-image/ up for real with docker-compose
// (v1) on the stand-in for the stock image (backend and its installer; the dashboard
// image cannot be pulled here): the installer puts the shim on the volume and exits
// 0, the backend starts only then, turns healthy through the shim's --check, serves
// Node callbacks to http://127.0.0.1 through the shim's 127.0.0.1:80, and drains on
// `docker-compose stop`.
func TestComposeStockImageUp(t *testing.T) {
	t.Parallel()
	c := dockertest.NewCompose(t, stockComposeFile, "convexshimstock", []string{
		"CONVEX_BACKEND_IMAGE=" + dockertest.StandinImage,
		"CONVEX_SHIM_TARGET=shim-prebuilt", // the classic builder; bin/ from make build
		"CONVEX_SHIM_VERBOSE=true",
		"PUBLISH_ADDRESS=127.0.0.1",   // loopback only
		"PORT=0", "SITE_PROXY_PORT=0", // ephemeral host ports: the origin names none
	}, "shim-install", "backend")

	// The shim-only image reads bin/convex-shim: built under the build lock.
	c.BuildWithHostBinary("shim-install")
	start := time.Now()
	c.Must("up", "-d", "backend")
	t.Logf("docker-compose up -d backend: %v (shim-install ran to completion first)", time.Since(start).Round(time.Millisecond))

	inst := c.Must("ps", "-a", "-q", "shim-install")
	if inst == "" {
		t.Fatal("docker-compose ps -a -q shim-install: no container")
	}
	state, err := dockertest.Inspect(inst, "{{.State.Status}} {{.State.ExitCode}}")
	if err != nil {
		t.Fatal(err)
	}
	instLogs := (&dockertest.Container{Name: inst}).Logs(t)
	t.Logf("shim-install: %s: %s", state, strings.TrimSpace(instLogs))
	if state != "exited 0" || !strings.Contains(instLogs, "installed as "+shimPath) {
		t.Errorf("shim-install is %q, output %q: want exited 0 and \"installed as %s\"", state, instLogs, shimPath)
	}

	id := c.Must("ps", "-q", "backend")
	if id == "" {
		t.Fatal("docker-compose ps -q backend: no container")
	}
	if found, rw := mountRW(t, id, "/shim"); !found || rw {
		t.Errorf("backend's /shim mount: found %v, writable %v; want read-only", found, rw)
	}
	backend := &dockertest.Container{Name: id}
	health := backend.WaitHealthy(t, 90*time.Second)
	t.Logf("up to %s in %v", health, time.Since(start).Round(time.Millisecond))

	// The README's verification step.
	out, err := dockertest.Docker("exec", id, shimPath, "--check")
	t.Logf("docker exec backend %s --check (%v):\n%s", shimPath, err, out)
	if err != nil || !strings.Contains(out, "127.0.0.1:80") {
		t.Errorf("--check in the backend: %v", err)
	}

	backend.API = c.Must("port", "backend", "3210")
	// With the loopback origin the default forward listens, and Node's fetch callbacks go by
	// the preload straight to 3210, as users get them by default.
	if logs := backend.Logs(t); !strings.Contains(logs, defaultForward) {
		t.Errorf("logs lack the forward %q:\n%s", defaultForward, logs)
	}
	checkCallbacks(t, backend, nodeOps, "Node callbacks to http://127.0.0.1 -> 127.0.0.1:3210 in the container (fetch preload)", "")

	stopDrains(t, backend, 8*time.Second, "docker-compose stop", func() { c.Must("stop") })
}

// ---- Kubernetes on the stock image ----

type k8sMount struct {
	Name      string
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type k8sContainer struct {
	Name, Image   string
	Command, Args []string
	WorkingDir    string `yaml:"workingDir"`
	Ports         []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	Env             []struct{ Name, Value string }
	VolumeMounts    []k8sMount `yaml:"volumeMounts"`
	SecurityContext *struct {
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct{ Add, Drop []string }
	} `yaml:"securityContext"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
}

func (c k8sContainer) env() map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func (c k8sContainer) mountOf(volume string) *k8sMount {
	for i, m := range c.VolumeMounts {
		if m.Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

type k8sDeployment struct {
	Metadata struct {
		Name   string
		Labels map[string]string
	}
	Spec struct {
		Replicas int
		Strategy struct{ Type string }
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		}
		Template struct {
			Metadata struct{ Labels map[string]string }
			Spec     k8sPodSpec
		}
	}
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	InitContainers                []k8sContainer `yaml:"initContainers"`
	Containers                    []k8sContainer
	Volumes                       []struct {
		Name     string
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
		PersistentVolumeClaim *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
	}
}

// stockPod is what the stock-image Deployment runs, resolved: the init container and
// the directory it installs into, the backend container and where it sees that
// directory.
type stockPod struct {
	dep        k8sDeployment
	init       k8sContainer
	installDir string // the init container's --install DIR
	backend    k8sContainer
	shimMount  k8sMount // the backend's mount of the install volume
	grace      time.Duration
}

// loadStockPod parses kubernetes/stock-image/deployment.yaml and resolves the chain
// init container args -> its volume mount -> an emptyDir -> the backend's mount.
func loadStockPod(t *testing.T) stockPod {
	t.Helper()
	docs := k8sDocs(t, stockK8sDir)
	if len(docs) != 1 || len(docs["Deployment"]) != 1 {
		t.Fatalf("%s: want exactly one document, a Deployment (it uses ../service.yaml and ../persistentvolumeclaim.yaml)", stockK8sDir)
	}
	var p stockPod
	if err := docs["Deployment"][0].Decode(&p.dep); err != nil {
		t.Fatal(err)
	}
	spec := p.dep.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("%d init containers and %d containers, want 1 and 1 (the installer; the backend, no sidecar)", len(spec.InitContainers), len(spec.Containers))
	}
	p.init, p.backend = spec.InitContainers[0], spec.Containers[0]
	if len(p.init.Args) != 2 || p.init.Args[0] != "--install" {
		t.Fatalf("init container args %q, want [--install DIR]", p.init.Args)
	}
	p.installDir = p.init.Args[1]
	var volume string
	for _, m := range p.init.VolumeMounts {
		if m.MountPath == p.installDir && !m.ReadOnly {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("init container: no writable volume mounted at %s, its --install DIR", p.installDir)
	}
	for _, v := range spec.Volumes {
		if v.Name == volume && v.EmptyDir == nil {
			t.Errorf("volume %s is not an emptyDir", volume)
		}
	}
	m := p.backend.mountOf(volume)
	if m == nil {
		t.Fatalf("backend does not mount volume %s, where the init container installs the shim", volume)
	}
	p.shimMount = *m
	p.grace = checkGrace(t, p.backend.env(), time.Duration(spec.TerminationGracePeriodSeconds)*time.Second, "terminationGracePeriodSeconds")
	return p
}

func quoted(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func TestKubernetesStockImageManifest(t *testing.T) {
	p := loadStockPod(t)
	spec := p.dep.Spec.Template.Spec
	b := p.backend

	// It replaces ../deployment.yaml and uses ../service.yaml and the claim there.
	parent := k8sDocs(t, "kubernetes")
	var pdep k8sDeployment
	var svc struct {
		Spec struct{ Selector map[string]string }
	}
	var pvc struct{ Metadata struct{ Name string } }
	for _, d := range []struct {
		n *yaml.Node
		v any
	}{{parent["Deployment"][0], &pdep}, {parent["Service"][0], &svc}, {parent["PersistentVolumeClaim"][0], &pvc}} {
		if err := d.n.Decode(d.v); err != nil {
			t.Fatal(err)
		}
	}
	if p.dep.Metadata.Name != pdep.Metadata.Name {
		t.Errorf("name %q, want %q: it replaces ../deployment.yaml", p.dep.Metadata.Name, pdep.Metadata.Name)
	}
	for k, v := range svc.Spec.Selector {
		if p.dep.Spec.Template.Metadata.Labels[k] != v || p.dep.Spec.Selector.MatchLabels[k] != v {
			t.Errorf("label %s=%s of ../service.yaml's selector: not on this Deployment's pods and selector", k, v)
		}
	}
	if p.dep.Spec.Replicas != 1 || p.dep.Spec.Strategy.Type != "Recreate" {
		t.Errorf("replicas %d, strategy %q: want 1 and Recreate", p.dep.Spec.Replicas, p.dep.Spec.Strategy.Type)
	}

	// The init container: the shim-only image, no privileges.
	if !strings.Contains(p.init.Image, "/convex-shim:") || strings.Contains(p.init.Image, "convex-backend") {
		t.Errorf("init container image %q, want the shim-only image (<registry>/convex-shim:<tag>)", p.init.Image)
	}
	if len(p.init.Command) != 0 {
		t.Errorf("init container command %q: the image's ENTRYPOINT /convex-shim is the one to run", p.init.Command)
	}
	if sc := p.init.SecurityContext; sc == nil || !sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("init container securityContext %+v: want readOnlyRootFilesystem, drop ALL, no privilege escalation (it needs none)", sc)
	}

	// The backend: the stock image, the shim from the volume, read-only.
	if !strings.HasPrefix(b.Image, wantStock) {
		t.Errorf("backend image %q, want the stock %s...", b.Image, wantStock)
	}
	shim := p.shimMount.MountPath + "/convex-shim"
	if want := []string{shim, "--", "./run_backend.sh"}; !slices.Equal(b.Command, want) {
		t.Errorf("backend command %q, want %q", b.Command, want)
	}
	if len(b.Args) != 0 || b.WorkingDir != "" {
		t.Errorf("backend args %q, workingDir %q: want none (the image's WORKDIR /convex holds run_backend.sh)", b.Args, b.WorkingDir)
	}
	if !p.shimMount.ReadOnly {
		t.Errorf("backend mounts %s at %s writable, want readOnly: true", p.shimMount.Name, p.shimMount.MountPath)
	}
	env := b.env()
	routes := checkPublicOrigin(t, stockK8sDir, env)
	var claim string
	for _, v := range spec.Volumes {
		if m := b.mountOf(v.Name); m != nil && m.MountPath == "/convex/data" && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim != pvc.Metadata.Name {
		t.Errorf("/convex/data comes from claim %q, want ../persistentvolumeclaim.yaml's %q", claim, pvc.Metadata.Name)
	}
	ports := map[string]int{}
	for _, port := range b.Ports {
		ports[port.Name] = port.ContainerPort
	}
	if ports["api"] != 3210 || ports["site"] != 3211 {
		t.Errorf("container ports %v, want api 3210 and site 3211 (../service.yaml targets them by name)", ports)
	}
	checkProbes(t, shim, routes, b.StartupProbe, b.ReadinessProbe, b.LivenessProbe)
	if b.ReadinessProbe == nil || b.ReadinessProbe.Exec == nil {
		t.Error("readinessProbe: want the exec --check, so the pod is ready only when callbacks reach the backend")
	}
	readmeMentions(t, stockK8sDir, "terminationGracePeriodSeconds: "+strconv.Itoa(spec.TerminationGracePeriodSeconds),
		"CONVEX_SHIM_GRACE: "+p.grace.String(), "SIGTERM", "args: "+quoted(p.init.Args), "command: "+quoted(b.Command),
		"emptyDir", "readOnly: true", "readOnlyRootFilesystem: true", "--target shim", env["CONVEX_CLOUD_ORIGIN"], env["CONVEX_SITE_ORIGIN"], "--check",
		"/version", "3210", "NET_BIND_SERVICE", "docker stop -t "+strconv.Itoa(spec.TerminationGracePeriodSeconds))
}

// TestKubernetesStockImageMechanics proves with Docker what the stock-image
// Deployment relies on, using the manifest's own values: the init container (the
// shim-only image with its args, read-only root, no capabilities) installs the binary
// into a fresh volume with mode 755; the stock image (the stand-in), with that volume
// mounted read-only and the backend container's command in place of its ENTRYPOINT,
// passes the readiness probe's exec and drains on `docker stop -t
// terminationGracePeriodSeconds`. The manifest's origin is a public ingress name that the
// container cannot resolve, upstream #386's case: a stock fetch to it from the container
// fails, and the Node server's callbacks to it (every kind, storage included) still
// succeed, through the fetch preload in the container and not through the shim's forward.
func TestKubernetesStockImageMechanics(t *testing.T) {
	t.Parallel()
	p := loadStockPod(t)
	standin := dockertest.BuildStandin(t)
	shimOnly := dockertest.BuildShimOnlyImage(t)
	vol := dockertest.Volume(t) // the emptyDir

	// The init container, as the kubelet would run it.
	initCtr := dockertest.Track(t, dockertest.RandomName("convex-e2e-init-"))
	args := []string{"run", "--name", initCtr.Name, "-v", vol + ":" + p.installDir}
	if sc := p.init.SecurityContext; sc != nil {
		if sc.ReadOnlyRootFilesystem {
			args = append(args, "--read-only")
		}
		for _, c := range sc.Capabilities.Drop {
			args = append(args, "--cap-drop", c)
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			args = append(args, "--security-opt", "no-new-privileges")
		}
	}
	args = append(append(args, shimOnly), p.init.Args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	t.Logf("init container: docker %s: %v, exit %v: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, bytes.TrimSpace(out))
	if err != nil || !strings.Contains(string(out), "installed as "+p.installDir+"/convex-shim") {
		t.Fatalf("init container: %v: %s", err, out)
	}
	hdr, installed := initCtr.ReadFile(t, p.installDir+"/convex-shim")
	_, own := initCtr.ReadFile(t, "/convex-shim") // the binary in the shim-only image
	t.Logf("in the volume: %s mode %04o uid %d, %d bytes, sha256 %s", hdr.Name, hdr.Mode&0o7777, hdr.Uid, len(installed), sha(installed))
	if hdr.Typeflag != tar.TypeReg || hdr.Mode&0o7777 != 0o755 || hdr.Uid != 0 {
		t.Errorf("installed file: type %c mode %04o uid %d, want a regular file, mode 0755, owned by root", hdr.Typeflag, hdr.Mode&0o7777, hdr.Uid)
	}
	if !bytes.Equal(installed, own) {
		t.Errorf("installed binary (sha256 %s) differs from the image's /convex-shim (sha256 %s)", sha(installed), sha(own))
	}

	// The backend container: the stock image's ENTRYPOINT replaced by the command.
	ro := ""
	if p.shimMount.ReadOnly {
		ro = ":ro"
	}
	var env []string
	for _, e := range p.backend.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	o := dockertest.Options{
		Env:    append(env, "CONVEX_SHIM_VERBOSE=true"),
		Docker: []string{"-v", vol + ":" + p.shimMount.MountPath + ro, "--entrypoint", p.backend.Command[0]},
		Args:   slices.Concat(p.backend.Command[1:], p.backend.Args),
	}
	t.Logf("backend: %s with %+v", standin, o)
	start = time.Now()
	backend := dockertest.Start(t, standin, o)
	if found, rw := mountRW(t, backend.Name, p.shimMount.MountPath); !found || rw {
		t.Errorf("%s mount: found %v, writable %v; want read-only", p.shimMount.MountPath, found, rw)
	}

	// startupProbe / livenessProbe: GET /version on 3210.
	backend.WaitReady(t)
	t.Logf("GET /version answered %v after docker run", time.Since(start).Round(time.Millisecond))

	// readinessProbe: the exec, as the kubelet runs it: the forward and the preload's route.
	origin := p.backend.env()["CONVEX_CLOUD_ORIGIN"]
	probe := p.backend.ReadinessProbe.Exec.Command
	out2, err := dockertest.Docker(append([]string{"exec", backend.Name}, probe...)...)
	t.Logf("readinessProbe %q: %v\n%s", probe, err, out2)
	fetchRoute := regexp.MustCompile(`(?m)^fetch ` + regexp.QuoteMeta(origin) + ` +127\.0\.0\.1:3210 +CONVEX_CLOUD_ORIGIN \(node preload\) +ok$`)
	if err != nil || !strings.Contains(out2, "127.0.0.1:80") || !fetchRoute.MatchString(out2) {
		t.Errorf("readinessProbe %q: %v; want the forward and the row %s, both ok", probe, err, fetchRoute)
	}

	// Upstream #386: the container cannot reach its own public name. Node's stock fetch
	// (docker exec's environment has no preload: the shim adds it for the backend only).
	reach := `fetch(process.argv[1] + "/version").then((r) => console.log("reached: HTTP " + r.status),
		(e) => { console.log("stock fetch: " + e.message + ": " + (e.cause && (e.cause.code || e.cause.message))); process.exit(3); })`
	out3, err := exec.Command("docker", "exec", backend.Name, "node", "-e", reach, origin).CombinedOutput()
	t.Logf("from the container, %s/version: %v: %s", origin, err, bytes.TrimSpace(out3))
	if dockertest.ExitCode(err) != 3 {
		t.Fatalf("the container reaches %s (or node did not run: %v): this test needs the #386 case, a public name it cannot reach", origin, err)
	}

	before := strings.Count(backend.Logs(t), throughForward)
	checkCallbacks(t, backend, nodeOps, "Node callbacks to "+origin+" -> 127.0.0.1:3210 in the container (fetch preload)", "")
	if after := strings.Count(backend.Logs(t), throughForward); after != before {
		t.Errorf("%d connections through the forward during the callbacks: they should go by the fetch preload", after-before)
	}

	period := strconv.Itoa(p.dep.Spec.Template.Spec.TerminationGracePeriodSeconds)
	stopDrains(t, backend, p.grace, "docker stop -t "+period, func() {
		if _, err := dockertest.Docker("stop", "-t", period, backend.Name); err != nil {
			t.Fatal(err)
		}
	})
}

// ---- the top README's "Adopting convex-shim" ----

// TestReadmeAdopting holds the copy-paste blocks of the top README's "Adopting
// convex-shim" section to the tested files: its compose fragment to
// compose-stock-image/docker-compose.yml, its pod spec fragment to
// kubernetes/stock-image/deployment.yaml, and its commands to the image names, paths
// and module path those files and go.mod use.
func TestReadmeAdopting(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(raw), "\n## Adopting convex-shim\n")
	if !ok {
		t.Fatal(`README.md has no "## Adopting convex-shim" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var blocks []string
	for rest := sec; ; {
		var block string
		if _, rest, ok = strings.Cut(rest, "```yaml\n"); !ok {
			break
		}
		block, rest, _ = strings.Cut(rest, "```")
		blocks = append(blocks, block)
	}
	if len(blocks) != 2 {
		t.Fatalf("%d yaml blocks in the section, want 2 (compose, Kubernetes)", len(blocks))
	}

	// Compose: the fragment's fields are the example file's.
	file := loadCompose(t, stockComposeFile)
	var frag composeFileT
	if err := yaml.Unmarshal([]byte(blocks[0]), &frag); err != nil {
		t.Fatalf("the README's compose block: %v", err)
	}
	fi, ri := file.Services["shim-install"], frag.Services["shim-install"]
	if ri.Build.Dockerfile != fi.Build.Dockerfile || ri.Build.Target != fi.Build.Target ||
		!slices.Equal(ri.Command, fi.Command) || !slices.Equal(ri.Volumes, fi.Volumes) || ri.Restart != fi.Restart {
		t.Errorf("README shim-install %+v\ndiffers from %s's %+v", ri, stockComposeFile, fi)
	}
	fb, rb := file.Services["backend"], frag.Services["backend"]
	if !strings.HasPrefix(rb.Image, wantStock) || !slices.Equal(rb.Entrypoint, fb.Entrypoint) ||
		rb.DependsOn["shim-install"] != fb.DependsOn["shim-install"] || !slices.Equal(rb.Volumes, fb.Volumes) ||
		rb.StopGracePeriod != fb.StopGracePeriod || !slices.Equal(rb.Healthcheck.Test, fb.Healthcheck.Test) {
		t.Errorf("README backend %+v\ndiffers from %s's %+v", rb, stockComposeFile, fb)
	}
	for _, k := range []string{"CONVEX_SHIM_GRACE", "CONVEX_CLOUD_ORIGIN"} {
		if rb.Environment[k] != fb.Environment[k] {
			t.Errorf("README backend %s = %q, the file's %q", k, rb.Environment[k], fb.Environment[k])
		}
	}
	for _, v := range []string{"data", "shim"} {
		if _, ok := frag.Volumes[v]; !ok {
			t.Errorf("the README's compose block does not declare volume %s", v)
		}
	}

	// Kubernetes: the pod spec fragment's fields are the manifest's.
	p := loadStockPod(t)
	var spec k8sPodSpec
	if err := yaml.Unmarshal([]byte(blocks[1]), &spec); err != nil {
		t.Fatalf("the README's Kubernetes block: %v", err)
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("the README's Kubernetes block: %d init containers, %d containers; want 1 and 1", len(spec.InitContainers), len(spec.Containers))
	}
	rInit, rBackend := spec.InitContainers[0], spec.Containers[0]
	if want := p.dep.Spec.Template.Spec.TerminationGracePeriodSeconds; spec.TerminationGracePeriodSeconds != want {
		t.Errorf("README terminationGracePeriodSeconds %d, the manifest's %d", spec.TerminationGracePeriodSeconds, want)
	}
	if rInit.Image != p.init.Image || !slices.Equal(rInit.Args, p.init.Args) || !slices.Equal(rInit.VolumeMounts, p.init.VolumeMounts) {
		t.Errorf("README init container %+v\ndiffers from the manifest's %+v", rInit, p.init)
	}
	if !strings.HasPrefix(rBackend.Image, wantStock) || !slices.Equal(rBackend.Command, p.backend.Command) {
		t.Errorf("README backend image %q command %q; the manifest's command %q", rBackend.Image, rBackend.Command, p.backend.Command)
	}
	if m := rBackend.mountOf(p.shimMount.Name); m == nil || *m != p.shimMount {
		t.Errorf("README backend mount of %s: %+v, the manifest's %+v", p.shimMount.Name, m, p.shimMount)
	}
	for _, k := range []string{"CONVEX_SHIM_GRACE", "CONVEX_CLOUD_ORIGIN"} {
		if rBackend.env()[k] != p.backend.env()[k] {
			t.Errorf("README backend %s = %q, the manifest's %q", k, rBackend.env()[k], p.backend.env()[k])
		}
	}
	if rp, mp := rBackend.ReadinessProbe, p.backend.ReadinessProbe; rp == nil || rp.Exec == nil ||
		!slices.Equal(rp.Exec.Command, mp.Exec.Command) || rp.TimeoutSeconds != mp.TimeoutSeconds {
		t.Errorf("README readinessProbe %+v, want the manifest's exec %q, timeoutSeconds %d", rp, mp.Exec.Command, mp.TimeoutSeconds)
	}
	emptyDir := false
	for _, v := range spec.Volumes {
		emptyDir = emptyDir || (v.Name == p.shimMount.Name && v.EmptyDir != nil)
	}
	if !emptyDir {
		t.Errorf("the README's Kubernetes block: volume %s is not an emptyDir", p.shimMount.Name)
	}

	// The commands: the shim-only image the manifest names, the check at each path,
	// the release check, and go install on go.mod's module path.
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	module, _, _ := strings.Cut(strings.TrimPrefix(string(mod), "module "), "\n")
	for _, want := range []string{
		"--target shim -t " + p.init.Image + " .",
		"docker push " + p.init.Image,
		"/usr/local/bin/convex-shim --check",
		"docker compose exec backend /shim/convex-shim --check",
		"kubectl exec deploy/convex-backend -c backend -- /shim/convex-shim --check",
		"127.0.0.1:80  127.0.0.1:3210  default  ok",
		"curl -sS http://127.0.0.1/version",
		"make release",
		"sha256sum -c SHA256SUMS",
		"CGO_ENABLED=0 go install " + module + "/cmd/convex-shim@<version>",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("the README's Adopting section lacks %q", want)
		}
	}
}

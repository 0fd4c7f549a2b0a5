package examples

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Railway and Coolify cannot be deployed from here. Their files are parsed and checked
// against the shape of the platform's documented configuration (docs/platforms.md cites
// it), the shim's grace against the platform's SIGKILL deadline, and each README against the
// values its files use.

// railwayKeys are the config-as-code keys of Railway's reference
// (https://docs.railway.com/config-as-code/reference), with the JSON type each takes: "string",
// "number", "array", "object", or an enum's values joined with "|". A key the reference does
// not document, or a value of another type, fails: Railway rejects the file at deploy time
// ("deploy.drainingSeconds: Expected number, received string", railwayapp/docs#1243).
var railwayKeys = map[string]map[string]string{
	"build": {
		"builder": "RAILPACK|DOCKERFILE|NIXPACKS", "watchPatterns": "array", "buildCommand": "string",
		"dockerfilePath": "string", "railpackVersion": "string", "nixpacksConfigPath": "string",
		"nixpacksPlan": "object", "nixpacksVersion": "string",
	},
	"deploy": {
		"startCommand": "string", "preDeployCommand": "array", "multiRegionConfig": "object",
		"healthcheckPath": "string", "healthcheckTimeout": "number",
		"restartPolicyType": "ON_FAILURE|ALWAYS|NEVER", "restartPolicyMaxRetries": "number",
		"cronSchedule": "string", "overlapSeconds": "number", "drainingSeconds": "number",
	},
}

// jsonType names v's JSON type as railwayKeys does.
func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case bool:
		return "boolean"
	}
	return "null"
}

// checkRailwaySection checks one section (build or deploy) of a railway.json against
// railwayKeys; null is allowed where the reference says a field "can be set to null".
func checkRailwaySection(t *testing.T, name string, section map[string]any) {
	t.Helper()
	for k, v := range section {
		want, ok := railwayKeys[name][k]
		switch got := jsonType(v); {
		case !ok:
			t.Errorf("railway.json %s.%s: not a key of Railway's config-as-code reference", name, k)
		case strings.Contains(want, "|"):
			if s, _ := v.(string); !slices.Contains(strings.Split(want, "|"), s) {
				t.Errorf("railway.json %s.%s = %v, want one of %s", name, k, v, want)
			}
		case got != want && got != "null":
			t.Errorf("railway.json %s.%s is a %s, Railway's reference takes a %s", name, k, got, want)
		}
	}
}

// readEnvFile reads KEY=VALUE lines, skipping blanks and # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", path, line)
		}
		env[k] = v
	}
	return env
}

func TestRailwayConfig(t *testing.T) {
	raw, err := os.ReadFile("railway/railway.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("railway.json: %v", err)
	}
	for k := range cfg {
		if !slices.Contains([]string{"$schema", "build", "deploy", "environments"}, k) {
			t.Errorf("railway.json: top-level key %q is not in Railway's config-as-code reference", k)
		}
	}
	if cfg["$schema"] != "https://railway.com/railway.schema.json" {
		t.Errorf("railway.json $schema = %v, want Railway's https://railway.com/railway.schema.json", cfg["$schema"])
	}
	build, _ := cfg["build"].(map[string]any)
	deploy, _ := cfg["deploy"].(map[string]any)
	checkRailwaySection(t, "build", build)
	checkRailwaySection(t, "deploy", deploy)
	if build["builder"] != "DOCKERFILE" {
		t.Errorf("build.builder = %v, want DOCKERFILE", build["builder"])
	}
	// Relative to the service's root: the fork's root, where Dockerfile.backend is.
	dockerfile, _ := build["dockerfilePath"].(string)
	requireDockerfile(t, "build.dockerfilePath", filepath.Join("..", dockerfile))
	if deploy["healthcheckPath"] != "/version" {
		t.Errorf("deploy.healthcheckPath = %v, want /version (answers once the backend has started)", deploy["healthcheckPath"])
	}
	draining, ok := deploy["drainingSeconds"].(float64)
	if !ok {
		t.Fatalf("deploy.drainingSeconds = %v: set it as a number; Railway's default, 3 s, is shorter than a drain", deploy["drainingSeconds"])
	}

	env := readEnvFile(t, "railway/variables.env")
	grace := checkGrace(t, env, time.Duration(draining)*time.Second, "drainingSeconds")
	if env["PORT"] != "3210" {
		t.Errorf("PORT = %q, want 3210: Railway probes the healthcheck and routes the domain to PORT", env["PORT"])
	}
	if img := env["BASE_IMAGE"]; !strings.HasPrefix(img, wantStock) || strings.HasSuffix(img, ":latest") {
		t.Errorf("BASE_IMAGE = %q, want a pinned %s<release>", img, wantStock)
	}
	if o := env["CONVEX_CLOUD_ORIGIN"]; o != "https://${{RAILWAY_PUBLIC_DOMAIN}}" {
		t.Errorf("CONVEX_CLOUD_ORIGIN = %q, want https://${{RAILWAY_PUBLIC_DOMAIN}} (Railway's reference variable)", o)
	}
	if o := env["CONVEX_SITE_ORIGIN"]; o != env["CONVEX_CLOUD_ORIGIN"]+"/http" {
		t.Errorf("CONVEX_SITE_ORIGIN = %q, want the cloud origin plus /http (one public port)", o)
	}
	// What the shim sees once Railway has put the service's public domain in for its
	// reference variable (a stand-in name here).
	resolved := map[string]string{}
	for k, v := range env {
		resolved[k] = strings.ReplaceAll(v, "${{RAILWAY_PUBLIC_DOMAIN}}", "convex-backend.example.com")
	}
	checkPublicOrigin(t, "railway", resolved)
	readmeMentions(t, "railway", `"drainingSeconds": `+strconv.Itoa(int(draining)), "CONVEX_SHIM_GRACE="+grace.String(),
		"SIGTERM", "SIGKILL", "3 s", "RAILWAY_DEPLOYMENT_DRAINING_SECONDS", "PORT=3210", "/version", "/convex/data",
		"variables.env", "railway ssh", "./generate_admin_key.sh")
}

// coolifyMagic is Coolify's documented magic-variable form for URLs: SERVICE_URL_ or
// SERVICE_FQDN_, an identifier (hyphens, not underscores, when a port follows), and an
// optional port (https://coolify.io/docs/knowledge-base/docker/compose).
var coolifyMagic = regexp.MustCompile(`^SERVICE_(URL|FQDN)_([A-Z0-9-]+)(?:_([0-9]+))?$`)

func TestCoolifyCompose(t *testing.T) {
	const path = "coolify/docker-compose.yml"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := loadCompose(t, path) // magic variables resolve to "" here, as with no Coolify
	b, d := f.Services["backend"], f.Services["dashboard"]
	requireDockerfile(t, "backend build", filepath.Join("coolify", b.Build.Context, b.Build.Dockerfile))
	if img := b.Build.Args["BASE_IMAGE"]; !strings.HasPrefix(img, wantStock) || strings.HasSuffix(img, ":latest") {
		t.Errorf("BASE_IMAGE = %q, want a pinned %s<release>", img, wantStock)
	}

	// The magic variables each service declares, as Coolify parses them.
	urls := map[string]string{} // identifier -> port
	for svc, wantPort := range map[string]string{"backend": "3210", "dashboard": "6791"} {
		var found bool
		for _, item := range rawEnvList(t, raw, svc) {
			m := coolifyMagic.FindStringSubmatch(item)
			if m == nil {
				continue
			}
			urls[m[2]] = m[3]
			found = found || (m[2] == strings.ToUpper(svc) && m[3] == wantPort)
		}
		if !found {
			t.Errorf("%s: no SERVICE_URL_%s_%s: Coolify would not route its URL to port %s", svc, strings.ToUpper(svc), wantPort, wantPort)
		}
	}
	// Every origin names the backend's URL: the dashboard's browser calls the backend.
	for _, c := range []struct{ svc, name, want string }{
		{"backend", "CONVEX_CLOUD_ORIGIN", "${SERVICE_URL_BACKEND}"},
		{"backend", "CONVEX_SITE_ORIGIN", "${SERVICE_URL_BACKEND}/http"},
		{"dashboard", "NEXT_PUBLIC_DEPLOYMENT_URL", "${SERVICE_URL_BACKEND}"},
	} {
		var got string
		for _, item := range rawEnvList(t, raw, c.svc) {
			if v, ok := strings.CutPrefix(item, c.name+"="); ok {
				got = v
			}
		}
		if got != c.want {
			t.Errorf("%s %s = %q, want %q (the backend's Coolify URL)", c.svc, c.name, got, c.want)
		}
	}
	// What the shim sees once Coolify has put the backend's URL in (a stand-in https URL
	// here, as with a wildcard domain and TLS set up), and how long --check may take then.
	var resolved composeFileT
	if err := yaml.Unmarshal([]byte(interpolate(string(raw), map[string]string{"SERVICE_URL_BACKEND": "https://backend.convex.example.com"})), &resolved); err != nil {
		t.Fatal(err)
	}
	routes := checkPublicOrigin(t, "coolify", resolved.Services["backend"].Environment)
	if timeout, err := time.ParseDuration(b.Healthcheck.Timeout); err != nil || timeout <= checkWorst(routes) {
		t.Errorf("backend healthcheck timeout %q, want above --check's worst case for its %d routes, %v", b.Healthcheck.Timeout, len(routes), checkWorst(routes))
	}
	if len(b.Ports) != 0 || len(d.Ports) != 0 {
		t.Errorf("published ports %q, %q: Coolify's proxy routes the URLs; a published port bypasses it", b.Ports, d.Ports)
	}
	// Coolify stops with `docker stop --time=30`; a compose stop uses stop_grace_period.
	const coolifyStop = 30 * time.Second
	stopGrace, err := time.ParseDuration(b.StopGracePeriod)
	if err != nil || stopGrace != coolifyStop {
		t.Errorf("backend stop_grace_period %q, want 30s, Coolify's own docker stop timeout", b.StopGracePeriod)
	}
	grace := checkGrace(t, b.Environment, coolifyStop, "Coolify's docker stop --time=30")
	if want := []string{"CMD", "/usr/local/bin/convex-shim", "--check"}; !slices.Equal(b.Healthcheck.Test, want) {
		t.Errorf("backend healthcheck %q, want %q", b.Healthcheck.Test, want)
	}
	if d.DependsOn["backend"].Condition != "service_healthy" || !strings.HasPrefix(d.Image, "ghcr.io/get-convex/convex-dashboard:") {
		t.Errorf("dashboard image %q depends_on %v: want Convex's dashboard after a healthy backend", d.Image, d.DependsOn)
	}
	// docker-compose itself accepts the file.
	composeConfig(t, copyExample(t, path, ""))
	readmeMentions(t, "coolify", "CONVEX_SHIM_GRACE="+grace.String(), "SIGTERM", "SIGKILL", "docker stop --time=30",
		"stop_grace_period: 30s", "SERVICE_URL_BACKEND_3210", "SERVICE_URL_DASHBOARD_6791", "${SERVICE_URL_BACKEND}",
		"${SERVICE_URL_BACKEND}/http", "NEXT_PUBLIC_DEPLOYMENT_URL", "./generate_admin_key.sh", "--check")
}

// rawEnvList returns a service's environment list items as written (before interpolation).
func rawEnvList(t *testing.T, raw []byte, service string) []string {
	t.Helper()
	var f struct {
		Services map[string]struct{ Environment []string }
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s environment: %v (want a list of NAME=VALUE)", service, err)
	}
	return f.Services[service].Environment
}

// TestExamplesPinConvexImages: every Convex image an example names is a release, not :latest
// (Convex asks for the same version of backend and dashboard, which :latest cannot promise).
func TestExamplesPinConvexImages(t *testing.T) {
	latest := regexp.MustCompile(`ghcr\.io/get-convex/convex-(backend|dashboard):latest`)
	n := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".md") || strings.HasSuffix(path, ".tsv") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, m := range latest.FindAllString(string(data), -1) {
			t.Errorf("%s names %s: pin a release from Convex's self-hosted/CHANGELOG.md", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d example files checked", n)
}

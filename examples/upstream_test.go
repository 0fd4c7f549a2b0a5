package examples

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The compose examples follow Convex's own self-hosted/docker/docker-compose.yml variable for
// variable. upstream-compose.tsv records that file (services, fields, variables, defaults)
// with the upstream commit; TestComposeMatchesUpstream holds each example to it, and a
// difference passes only when the example explains it where it is made, with a "# shim:"
// comment, or when upstreamAllowed below says why. TestComposeDotEnv runs docker-compose
// itself on a copy of each example with a .env beside it, as Convex's docs tell users to set
// the origins, and checks what the containers would get.

const upstreamTable = "upstream-compose.tsv"

// composeExamples are the files held to upstream's.
var composeExamples = []string{composeFile, stockComposeFile}

// upstreamAllowed explains differences that have no line to carry a comment: a field of
// upstream's that an example leaves out. Keyed by service and name, for every example.
var upstreamAllowed = map[string]string{
	"backend stop_signal": "the shim is PID 1 and turns Docker's SIGTERM into the one SIGINT the backend drains on " +
		"(TestComposeUp and TestComposeStockImageUp stop with SIGTERM and check the drain); SIGINT would work as well",
}

type upstreamRow struct{ service, kind, name, value string }

// loadUpstream reads upstream-compose.tsv: its rows, and the commit named in its header.
func loadUpstream(t *testing.T) (commit string, rows []upstreamRow) {
	t.Helper()
	f, err := os.Open(upstreamTable)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if c, ok := strings.CutPrefix(text, "# upstream-commit: "); ok {
			commit = strings.TrimSpace(c)
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) != 4 {
			t.Fatalf("%s:%d: %d columns, want 4 (service, kind, name, value)", upstreamTable, line, len(cols))
		}
		rows = append(rows, upstreamRow{cols[0], cols[1], cols[2], cols[3]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{7,40}$`).MatchString(commit) {
		t.Fatalf("%s: no \"# upstream-commit: <sha>\" header line (got %q): the table must say which upstream it was read at", upstreamTable, commit)
	}
	return commit, rows
}

// mapGet returns the key and value nodes of name in the mapping node m, or nils.
func mapGet(m *yaml.Node, name string) (key, value *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// shimReason returns the reason of a "# shim: reason" comment on any of nodes, or "".
func shimReason(nodes ...*yaml.Node) string {
	for _, n := range nodes {
		if n == nil {
			continue
		}
		for _, c := range []string{n.LineComment, n.HeadComment} {
			if _, r, ok := strings.Cut(c, "# shim:"); ok && strings.TrimSpace(r) != "" {
				return strings.TrimSpace(r)
			}
		}
	}
	return ""
}

// fieldValue renders a compose value as upstream-compose.tsv writes it: scalars as they are,
// lists joined with " | ", an image as its repository.
func fieldValue(name string, n *yaml.Node) string {
	if n == nil {
		return ""
	}
	if n.Kind == yaml.SequenceNode {
		var vs []string
		for _, c := range n.Content {
			vs = append(vs, c.Value)
		}
		return strings.Join(vs, " | ")
	}
	if name == "image" {
		ref := interpolate(n.Value, nil)
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			ref = ref[:i]
		}
		return ref
	}
	return n.Value
}

// composeDiff is one way an example differs from upstream's file.
type composeDiff struct{ where, what, reason string }

// diffUpstream compares the compose file at path with upstream's rows and returns every
// difference with its explanation ("" when there is none), and how many entries match.
func diffUpstream(t *testing.T, path string, rows []upstreamRow) (diffs []composeDiff, same int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	root := doc.Content[0]
	_, services := mapGet(root, "services")
	_, volumes := mapGet(root, "volumes")
	add := func(where, what string, nodes ...*yaml.Node) {
		reason := shimReason(nodes...)
		if reason == "" {
			if svc, name, ok := strings.Cut(where, " "); ok {
				reason = upstreamAllowed[svc+" "+name]
			}
		}
		diffs = append(diffs, composeDiff{where, what, reason})
	}

	// Every upstream entry: present and equal, or explained.
	known := map[string][]string{} // service -> upstream's top-level keys
	upstreamEnv := map[string]map[string]bool{}
	for _, r := range rows {
		if r.kind == "volume" {
			if k, _ := mapGet(volumes, r.name); k == nil {
				add("volumes "+r.name, "missing")
			} else {
				same++
			}
			continue
		}
		svcKey, svc := mapGet(services, r.service)
		if svc == nil {
			add(r.service, "service missing")
			continue
		}
		_ = svcKey
		switch r.kind {
		case "field":
			top, sub, _ := strings.Cut(r.name, ".")
			known[r.service] = append(known[r.service], top)
			key, val := mapGet(svc, top)
			if sub != "" {
				key, val = mapGet(val, sub)
				if top == "depends_on" { // depends_on.<service>: its condition
					_, val = mapGet(val, "condition")
				}
			}
			switch got := fieldValue(r.name, val); {
			case got == r.value:
				same++
			case val == nil && top == "image":
				bk, bv := mapGet(svc, "build")
				add(r.service+" image", "built from "+fieldValue("", bv)+" instead of "+r.value, bk, bv)
			case val == nil:
				add(r.service+" "+r.name, "absent (upstream: "+r.value+")", key)
			default:
				add(r.service+" "+r.name, strings.TrimSpace(got)+" (upstream: "+r.value+")", key, val)
			}
		case "env":
			if upstreamEnv[r.service] == nil {
				upstreamEnv[r.service] = map[string]bool{}
			}
			upstreamEnv[r.service][r.name] = true
			_, env := mapGet(svc, "environment")
			if env == nil || env.Kind != yaml.SequenceNode {
				add(r.service+" environment", "not a list of NAME=VALUE and NAME, as upstream's")
				continue
			}
			want := r.name + "=" + r.value
			if r.value == "-" {
				want = r.name // "- NAME": unset unless set in the environment or .env
			}
			i := slices.IndexFunc(env.Content, func(n *yaml.Node) bool {
				name, _, _ := strings.Cut(n.Value, "=")
				return name == r.name
			})
			switch {
			case i < 0:
				add(r.service+" "+r.name, "missing (upstream: "+want+")")
			case env.Content[i].Value == want:
				same++
			default:
				add(r.service+" "+r.name, env.Content[i].Value+" (upstream: "+want+")", env.Content[i])
			}
		default:
			t.Fatalf("%s: kind %q, want field, env or volume", upstreamTable, r.kind)
		}
	}

	// Everything the example adds: services, keys, variables, volumes.
	for i := 0; i+1 < len(services.Content); i += 2 {
		name, svc := services.Content[i].Value, services.Content[i+1]
		if _, ok := known[name]; !ok {
			add(name, "service not in upstream's file", services.Content[i])
			continue
		}
		for j := 0; j+1 < len(svc.Content); j += 2 {
			key, val := svc.Content[j], svc.Content[j+1]
			switch {
			case key.Value == "environment":
				for _, item := range val.Content {
					if name2, _, _ := strings.Cut(item.Value, "="); !upstreamEnv[name][name2] {
						add(name+" "+name2, "not in upstream's file", item)
					}
				}
			case key.Value == "healthcheck" || key.Value == "depends_on":
				for k := 0; k+1 < len(val.Content); k += 2 {
					if !slices.Contains(rowNames(rows, name), key.Value+"."+val.Content[k].Value) {
						add(name+" "+key.Value+"."+val.Content[k].Value, "not in upstream's file", val.Content[k], val.Content[k+1], key)
					}
				}
			case key.Value != "image" && !slices.Contains(known[name], key.Value):
				add(name+" "+key.Value, "not in upstream's file", key, val)
			}
		}
	}
	for i := 0; volumes != nil && i+1 < len(volumes.Content); i += 2 {
		if !slices.ContainsFunc(rows, func(r upstreamRow) bool { return r.kind == "volume" && r.name == volumes.Content[i].Value }) {
			add("volumes "+volumes.Content[i].Value, "not in upstream's file", volumes.Content[i], volumes.Content[i+1])
		}
	}
	return diffs, same
}

// rowNames lists the field names upstream's file has for service.
func rowNames(rows []upstreamRow, service string) []string {
	var names []string
	for _, r := range rows {
		if r.service == service && r.kind == "field" {
			names = append(names, r.name)
		}
	}
	return names
}

// TestComposeMatchesUpstream holds each compose example to upstream-compose.tsv: every
// service, field and variable of Convex's file is there with Convex's value, or the
// difference says why ("# shim:" on its line, or upstreamAllowed); every addition says why.
func TestComposeMatchesUpstream(t *testing.T) {
	commit, rows := loadUpstream(t)
	for _, path := range composeExamples {
		t.Run(filepath.Dir(path), func(t *testing.T) {
			diffs, same := diffUpstream(t, path, rows)
			explained := 0
			for _, d := range diffs {
				if d.reason == "" {
					t.Errorf("%s: %s: %s, and no \"# shim: <why>\" comment on that line (or entry in upstreamAllowed) explains it", path, d.where, d.what)
					continue
				}
				explained++
				t.Logf("%s: %s (shim: %s)", d.where, d.what, d.reason)
			}
			t.Logf("%s against upstream %s: %d of %d upstream entries identical; %d differences or additions, %d explained",
				path, commit, same, len(rows), len(diffs), explained)
		})
	}
}

// TestComposeMatchesUpstreamCatches feeds diffUpstream an example with one unexplained change
// of each kind and checks that each is reported unexplained, and that a "# shim:" comment
// explains it.
func TestComposeMatchesUpstreamCatches(t *testing.T) {
	_, rows := loadUpstream(t)
	orig, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, where string }{
		{"value changed", "DOCUMENT_RETENTION_DELAY=${DOCUMENT_RETENTION_DELAY:-172800}", "DOCUMENT_RETENTION_DELAY=${DOCUMENT_RETENTION_DELAY:-}", "backend DOCUMENT_RETENTION_DELAY"},
		{"passthrough given a value", "      - HTTP_SERVER_TIMEOUT_SECONDS\n", "      - HTTP_SERVER_TIMEOUT_SECONDS=${HTTP_SERVER_TIMEOUT_SECONDS:-}\n", "backend HTTP_SERVER_TIMEOUT_SECONDS"},
		{"variable dropped", "      - S3_ENDPOINT_URL\n", "", "backend S3_ENDPOINT_URL"},
		{"variable added", "      - MYSQL_URL\n", "      - EXTRA_KNOB=1\n      - MYSQL_URL\n", "backend EXTRA_KNOB"},
		{"field changed", "    stop_grace_period: 10s\n    # No stop_signal", "    stop_grace_period: 30s\n    # No stop_signal", "backend stop_grace_period"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(orig), tc.old) {
				t.Fatalf("%s no longer contains %q; update the case", composeFile, tc.old)
			}
			for _, explain := range []bool{false, true} {
				edited := strings.Replace(string(orig), tc.old, tc.new, 1)
				if explain && tc.new != "" { // the comment ends the changed line
					first, rest, _ := strings.Cut(tc.new, "\n")
					if strings.Contains(tc.new, "\n") {
						rest = "\n" + rest
					}
					edited = strings.Replace(string(orig), tc.old, first+" # shim: the test's reason"+rest, 1)
				}
				path := filepath.Join(t.TempDir(), "docker-compose.yml")
				if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
					t.Fatal(err)
				}
				diffs, _ := diffUpstream(t, path, rows)
				i := slices.IndexFunc(diffs, func(d composeDiff) bool { return d.where == tc.where })
				switch {
				case i < 0:
					t.Errorf("explained=%v: no difference reported at %q: %+v", explain, tc.where, diffs)
				case !explain && diffs[i].reason != "":
					t.Errorf("reported as explained (%q) without a comment", diffs[i].reason)
				case explain && tc.new != "" && diffs[i].reason != "the test's reason":
					t.Errorf("explained=%v: reason %q, want the comment's", explain, diffs[i].reason)
				}
			}
		})
	}
}

// composeConfig runs `docker-compose config` (v1, as Debian ships it; `make deps` installs it)
// on the compose file in dir with only PATH and HOME from the test's environment, and returns
// each service's environment as docker-compose resolved it: nil for a variable left unset.
func composeConfig(t *testing.T, dir string) map[string]map[string]*string {
	t.Helper()
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose (v1) is missing; this test needs it and does not skip (make deps installs it): %v", err)
	}
	cmd := exec.Command(bin, "config")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	var stderr strings.Builder
	cmd.Stderr = &stderr // warnings ("variable is not set"), kept out of the YAML
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose config in %s: %v\n%s%s", dir, err, out, stderr.String())
	}
	var cfg struct {
		Services map[string]struct {
			Environment map[string]*string
		}
	}
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("docker-compose config output: %v\n%s", err, out)
	}
	envs := map[string]map[string]*string{}
	for name, s := range cfg.Services {
		envs[name] = s.Environment
	}
	return envs
}

// copyExample copies the compose file at path into a fresh directory at the same depth (so
// its relative build context still resolves), with the given .env beside it when dotenv is
// not empty, and returns that directory.
func copyExample(t *testing.T, path, dotenv string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "examples", filepath.Base(filepath.Dir(path)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if dotenv != "" {
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func deref(p *string) string {
	if p == nil {
		return "<unset>"
	}
	return *p
}

// TestComposeDotEnv checks, with docker-compose itself, what each example's containers get:
// with a .env beside the file (as Convex's docs set the origins), its origins, dashboard URL
// and passed-through variables; with none, upstream's defaults, and upstream's "- NAME"
// variables unset rather than empty (an empty numeric knob makes the backend log "Invalid
// value ... falling back").
func TestComposeDotEnv(t *testing.T) {
	_, rows := loadUpstream(t)
	dotenv := map[string]string{
		"CONVEX_CLOUD_ORIGIN":         "https://convex.example.com",
		"CONVEX_SITE_ORIGIN":          "https://convex.example.com/http",
		"NEXT_PUBLIC_DEPLOYMENT_URL":  "https://convex.example.com",
		"INSTANCE_NAME":               "dotenv-instance",
		"DOCUMENT_RETENTION_DELAY":    "86400",
		"HTTP_SERVER_TIMEOUT_SECONDS": "120",
	}
	var lines []string
	for k, v := range dotenv {
		lines = append(lines, k+"="+v)
	}
	slices.Sort(lines)
	for _, path := range composeExamples {
		t.Run(filepath.Dir(path), func(t *testing.T) {
			f := loadCompose(t, path)
			withEnv := composeConfig(t, copyExample(t, path, strings.Join(lines, "\n")+"\n"))
			for k, want := range dotenv {
				svc := "backend"
				if k == "NEXT_PUBLIC_DEPLOYMENT_URL" {
					svc = "dashboard"
				}
				if got := withEnv[svc][k]; got == nil || *got != want {
					t.Errorf("with .env %s=%s: the %s container gets %s=%s", k, want, svc, k, deref(got))
				}
			}
			t.Logf("with .env: backend CONVEX_CLOUD_ORIGIN=%s, dashboard NEXT_PUBLIC_DEPLOYMENT_URL=%s",
				deref(withEnv["backend"]["CONVEX_CLOUD_ORIGIN"]), deref(withEnv["dashboard"]["NEXT_PUBLIC_DEPLOYMENT_URL"]))

			bare := composeConfig(t, copyExample(t, path, ""))
			unset, defaults := 0, 0
			for _, r := range rows {
				if r.kind != "env" {
					continue
				}
				got := bare[r.service][r.name]
				if r.value == "-" {
					if got != nil {
						t.Errorf("no .env: %s %s = %q, want unset, as upstream's \"- %s\"", r.service, r.name, *got, r.name)
					}
					unset++
					continue
				}
				// Where the file writes upstream's form, compose must resolve it to upstream's
				// default; where it differs, to the file's own (held by TestComposeMatchesUpstream).
				want := interpolate(r.value, nil)
				if v, ok := f.Services[r.service].Environment[r.name]; ok {
					want = v
				}
				if got == nil || *got != want {
					t.Errorf("no .env: %s %s = %s, want %s", r.service, r.name, deref(got), want)
				}
				defaults++
			}
			t.Logf("no .env: %d upstream variables unset, %d at their defaults (CONVEX_CLOUD_ORIGIN=%s, DISABLE_METRICS_ENDPOINT=%s, DOCUMENT_RETENTION_DELAY=%s)",
				unset, defaults, deref(bare["backend"]["CONVEX_CLOUD_ORIGIN"]), deref(bare["backend"]["DISABLE_METRICS_ENDPOINT"]), deref(bare["backend"]["DOCUMENT_RETENTION_DELAY"]))
		})
	}
}

// TestComposeV1NestedDefault is why the examples do not write upstream's nested origin
// default: docker-compose v1 (the one Debian ships, which the tests use) does not expand
// ${PORT:-3210} inside ${CONVEX_CLOUD_ORIGIN:-...}. If a docker-compose here ever does, this
// fails, and the examples should take upstream's form back.
func TestComposeV1NestedDefault(t *testing.T) {
	_, rows := loadUpstream(t)
	i := slices.IndexFunc(rows, func(r upstreamRow) bool { return r.kind == "env" && r.name == "CONVEX_CLOUD_ORIGIN" })
	if i < 0 || !strings.Contains(rows[i].value, "${PORT") {
		t.Fatalf("upstream's CONVEX_CLOUD_ORIGIN is no longer nested (%+v): take its form back into the examples", rows[i:i+1])
	}
	dir := t.TempDir()
	file := "services:\n  backend:\n    image: scratch\n    environment:\n      - CONVEX_CLOUD_ORIGIN=" + rows[i].value + "\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("PORT=8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := deref(composeConfig(t, dir)["backend"]["CONVEX_CLOUD_ORIGIN"])
	t.Logf("docker-compose config, upstream's %s with PORT=8080: %q", rows[i].value, got)
	if got == "http://127.0.0.1:8080" {
		t.Errorf("this docker-compose expands upstream's nested default (%q): write upstream's form in the examples and drop their \"# shim:\" notes about v1", got)
	}
}

package preload

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the real node, with NODE_OPTIONS as this package builds
// it, on testdata/cases.cjs (a CommonJS main, as upstream's local.cjs),
// against local servers: a fake backend standing for 127.0.0.1:3210, a
// fake site port, a "public" server the origin names, and another one.

func nodeBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("these tests run Node, which upstream's Node executor uses: %v (install nodejs 20, 22 or 24)", err)
	}
	return p
}

// server records the requests it handles as "METHOD /path?query".
type server struct {
	*httptest.Server
	name string

	mu      sync.Mutex
	seen    []string
	gates   map[string]chan struct{} // by name+key: closed when the event happened
	aborted chan string              // /hold keys whose client went away
}

func newServer(t *testing.T, name string) *server {
	s := &server{name: name, gates: map[string]chan struct{}{}, aborted: make(chan string, 8)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *server) gate(name, key string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.gates[name+key]
	if !ok {
		c = make(chan struct{})
		s.gates[name+key] = c
	}
	return c
}

func (s *server) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func pattern(n, from int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((from + i) % 251)
	}
	return b
}

func (s *server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen = append(s.seen, r.Method+" "+r.URL.RequestURI())
	s.mu.Unlock()
	k := r.URL.Query().Get("k")
	ctx := r.Context()
	switch {
	case s.name == "public" || s.name == "other":
		fmt.Fprintf(w, "%s %s", s.name, r.URL.Path)
	case r.URL.Path == "/bytes":
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Write(pattern(n, 0))
	case r.URL.Path == "/stream-up":
		first := make([]byte, 64<<10)
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		close(s.gate("first", k))
		s.echo(w, r, io.MultiReader(bytes.NewReader(first), r.Body))
	case r.URL.Path == "/wait-first":
		select {
		case <-s.gate("first", k):
			io.WriteString(w, "first part seen")
		case <-ctx.Done():
		}
	case r.URL.Path == "/stream-down":
		w.Write(pattern(64<<10, 0))
		w.(http.Flusher).Flush()
		select {
		case <-s.gate("release", k):
			w.Write(pattern(1<<20-64<<10, 64<<10))
		case <-ctx.Done():
		}
	case r.URL.Path == "/release":
		close(s.gate("release", k))
		io.WriteString(w, "released")
	case r.URL.Path == "/hold":
		w.Write(pattern(1024, 0))
		w.(http.Flusher).Flush()
		<-ctx.Done()
		s.aborted <- k
	default:
		s.echo(w, r, r.Body)
	}
}

// echo answers with what the request carried, the body as length and hash.
func (s *server) echo(w http.ResponseWriter, r *http.Request, body io.Reader) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
		"xtest": r.Header.Get("X-Test"), "length": n, "sha": hex.EncodeToString(h.Sum(nil)),
	})
}

// runNode runs one case of testdata/cases.cjs with nodeOptions and the
// URLs in cfg, and returns its stdout and stderr.
func runNode(t *testing.T, nodeOptions string, cfg map[string]string, name string) (stdout, stderr string, err error) {
	t.Helper()
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nodeBinary(t), filepath.Join("testdata", "cases.cjs"), name, string(js))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODE_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "NODE_OPTIONS="+nodeOptions)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

const preloadLine = "convex-shim: node preload: "

func TestNodeFetchRouting(t *testing.T) {
	const public, other = "$public", "$other"
	tests := []struct {
		name        string
		jsCase      string
		cloud, site string // origins; $public and $other stand for those servers
		user        string // the user's NODE_OPTIONS; $require is a preload of theirs
		userRequire string // that preload's source
		// What each server must have seen, in any order (streams make
		// calls overlap), or nil for nothing.
		backend, site3211, public, other []string
		aborts                           []string // /hold keys the backend saw go away
		stderrLines                      int      // "convex-shim: node preload:" lines
	}{
		{
			name: "string URL and Request inputs", jsCase: "inputs", cloud: public,
			backend: []string{"GET /api/echo?a=1&b=%20", "POST /api/actions/query", "POST /api/storage/upload?token=t1", "POST /api/keepalive", "DELETE /api/override", "GET /"},
		},
		{
			name: "GET POST PUT with 1 MiB bodies up and down", jsCase: "bodies", cloud: public,
			backend: []string{"POST /api/up?m=post", "PUT /api/up?m=put", "GET /bytes?n=1048576"},
		},
		{
			name: "a ReadableStream request body is streamed", jsCase: "streamUp", cloud: "https://convex.example.test",
			backend: []string{"POST /stream-up?k=1", "GET /wait-first?k=1", "PUT /stream-up?k=2", "GET /wait-first?k=2"},
		},
		{
			name: "the response is streamed", jsCase: "streamDown", cloud: "https://convex.example.test",
			backend: []string{"GET /stream-down?k=1", "GET /release?k=1"},
		},
		{
			name: "an abort signal ends the call mid-response", jsCase: "abort", cloud: "https://convex.example.test",
			backend: []string{"GET /hold?k=1", "GET /hold?k=2"}, aborts: []string{"1", "2"},
		},
		{
			name: "routes survive process.env being replaced", jsCase: "envSwap", cloud: "https://convex.example.test:8443/",
			backend: []string{"GET /api/after-swap"},
		},
		{
			name: "site origin under the cloud origin goes to /http on the API port", jsCase: "site",
			cloud: "https://convex.example.test", site: "https://convex.example.test/http",
			backend: []string{"GET /http/hello?x=1", "GET /api/cloud"},
		},
		{
			name: "a separate site origin goes to the site port", jsCase: "site",
			cloud: "https://convex.example.test", site: "https://site.example.test",
			backend: []string{"GET /api/cloud"}, site3211: []string{"GET /hello?x=1"},
		},
		{
			name: "URLs not under the origin are untouched", jsCase: "untouched", cloud: public + "/base",
			public: []string{"GET /basement", "GET /base/other-host"}, other: []string{"GET /base/other-port"},
			backend: []string{"GET /routed"},
		},
		{
			name: "origins with spaces and quotes", jsCase: "envSwap",
			cloud: "  https://convex.example.test:8443  ", site: "https://\"quoted\" 'site' \\\n\u2028\x00/ \U0001F600",
			backend: []string{"GET /api/after-swap"},
		},
		{
			name: "the user's NODE_OPTIONS stay in effect", jsCase: "userOptions", cloud: public,
			user: "--max-old-space-size=512 --require=$require", userRequire: `globalThis.userRequire = "ran";`,
			backend: []string{"GET /api/with-user-options"},
		},
		{
			name: "a read-only fetch leaves Node starting with stock fetch", jsCase: "stock", cloud: public,
			user:        "--require=$require",
			userRequire: `Object.defineProperty(globalThis, "fetch", { value: globalThis.fetch, writable: false, configurable: false });`,
			public:      []string{"GET /stock"}, stderrLines: 1,
		},
		{
			name: "no global fetch", jsCase: "noFetch", cloud: public,
			user: "--no-experimental-fetch", stderrLines: 1,
		},
		{
			name: "inputs the routing cannot read go to stock fetch as given", jsCase: "routingThrows", cloud: public,
			public: []string{"GET /odd-url", "GET /odd-request"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backend, site, pub, oth := newServer(t, "backend"), newServer(t, "site"), newServer(t, "public"), newServer(t, "other")
			expand := func(s string) string {
				return strings.NewReplacer(public, pub.URL, other, oth.URL).Replace(s)
			}
			user := tc.user
			if tc.userRequire != "" {
				f := filepath.Join(t.TempDir(), "user.cjs")
				if err := os.WriteFile(f, []byte(tc.userRequire), 0o600); err != nil {
					t.Fatal(err)
				}
				user = strings.ReplaceAll(user, "$require", f)
			}
			cloud, siteOrigin := expand(tc.cloud), expand(tc.site)
			opts := NodeOptions(user, Derive(cloud, siteOrigin, backend.URL, site.URL))
			stdout, stderr, err := runNode(t, opts, map[string]string{
				"cloud": strings.TrimSuffix(strings.TrimSpace(cloud), "/"), "site": siteOrigin, "public": pub.URL, "other": oth.URL,
			}, tc.jsCase)
			if err != nil || stdout != "ok\n" {
				t.Fatalf("node: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
			}
			if n := strings.Count(stderr, preloadLine); n != tc.stderrLines || (n == 0 && stderr != "") {
				t.Errorf("stderr has %d %q lines, want %d:\n%s", n, preloadLine, tc.stderrLines, stderr)
			}
			if tc.stderrLines > 0 && (!strings.HasPrefix(stderr, preloadLine) || strings.Count(stderr, "\n") != 1) {
				t.Errorf("stderr is not exactly one %q line:\n%s", preloadLine, stderr)
			}
			for _, s := range []struct {
				srv  *server
				want []string
			}{{backend, tc.backend}, {site, tc.site3211}, {pub, tc.public}, {oth, tc.other}} {
				got, want := s.srv.requests(), slices.Clone(s.want)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s saw %q, want %q", s.srv.name, got, want)
				}
			}
			var aborted []string
			for range tc.aborts {
				select {
				case k := <-backend.aborted:
					aborted = append(aborted, k)
				case <-time.After(10 * time.Second): // a hang guard, not a measurement
					t.Fatalf("the backend saw %q of the aborted calls %q go away", aborted, tc.aborts)
				}
			}
			slices.Sort(aborted)
			if !slices.Equal(aborted, tc.aborts) {
				t.Errorf("aborted calls %q, want %q", aborted, tc.aborts)
			}
		})
	}
}

// TestNodeTwoCopies: two different copies of the preload in NODE_OPTIONS
// (a value built by hand, or by two shims) route by the first one only;
// the second would otherwise wrap the first and take its calls.
func TestNodeTwoCopies(t *testing.T) {
	first, second := newServer(t, "backend"), newServer(t, "backend")
	cloud := "https://convex.example.test"
	opts := Option(Derive(cloud, "", first.URL, "")) + " " + Option(Derive(cloud, "", second.URL, ""))
	stdout, stderr, err := runNode(t, opts, map[string]string{"cloud": cloud}, "envSwap")
	if err != nil || stdout != "ok\n" || stderr != "" {
		t.Fatalf("node: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if got, want := first.requests(), []string{"GET /api/after-swap"}; !slices.Equal(got, want) {
		t.Errorf("first copy's backend saw %q, want %q", got, want)
	}
	if got := second.requests(); len(got) != 0 {
		t.Errorf("second copy's backend saw %q, want nothing", got)
	}
}

// TestNodeLoadFailure: a throw at a module's top level stops Node, so the
// preload must catch everything at load. Shown by loading the preload's
// body with install() made to throw: Node starts, fetch is stock, and
// stderr has one line saying why.
func TestNodeLoadFailure(t *testing.T) {
	pub := newServer(t, "public")
	src := strings.Replace(Source(Derive(pub.URL, "", "http://127.0.0.1:1", "")),
		"function install(specs) {", "function install(specs) {\n  throw new Error(\"made to fail\");", 1)
	if !strings.Contains(src, "made to fail") {
		t.Fatal("install() not found in the preload source")
	}
	opts := optionPrefix + base64Encode(src)
	stdout, stderr, err := runNode(t, opts, map[string]string{"cloud": pub.URL}, "stock")
	if err != nil || stdout != "ok\n" {
		t.Fatalf("node did not start with a failing preload: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if want := preloadLine + "fetch left as is: made to fail\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}

	// Without the catch, the same throw stops Node: the reason for it.
	bare := optionPrefix + base64Encode(`throw new Error("made to fail");`)
	if _, _, err := runNode(t, bare, map[string]string{"cloud": pub.URL}, "stock"); !errors.As(err, new(*exec.ExitError)) {
		t.Errorf("node with a throwing --import: %v, want an exit status", err)
	}
}

func base64Encode(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

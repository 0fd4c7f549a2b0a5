package preload

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

const api, site = "http://127.0.0.1:3210", "http://127.0.0.1:3211"

func TestDerive(t *testing.T) {
	cloudRoute := func(from string) Route { return Route{"CONVEX_CLOUD_ORIGIN", from, api} }
	siteRoute := func(from string) Route { return Route{"CONVEX_SITE_ORIGIN", from, site} }
	tests := []struct {
		name, cloud, site string
		want              []Route
	}{
		{"nothing set", "", "", nil},
		{"cloud only", "https://api.example.com", "", []Route{cloudRoute("https://api.example.com")}},
		{"site only", "", "https://site.example.com", []Route{siteRoute("https://site.example.com")}},
		{"separate names", "https://api.example.com", "https://site.example.com",
			[]Route{cloudRoute("https://api.example.com"), siteRoute("https://site.example.com")}},
		{"Fly guide: site is cloud + /http", "https://app.fly.dev", "https://app.fly.dev/http",
			[]Route{cloudRoute("https://app.fly.dev")}},
		{"cloud with a trailing slash", "https://app.fly.dev/", "https://app.fly.dev/http/",
			[]Route{cloudRoute("https://app.fly.dev/")}},
		{"case of scheme and host differs", "HTTPS://App.Fly.Dev", "https://app.fly.dev/http",
			[]Route{cloudRoute("HTTPS://App.Fly.Dev")}},
		// Both kept; the preload's tie goes to the cloud route, listed first.
		{"same origin for both", "https://app.fly.dev", "https://app.fly.dev",
			[]Route{cloudRoute("https://app.fly.dev"), siteRoute("https://app.fly.dev")}},
		// A proxy sending /site/* to the site port strips the prefix; the cloud route would not.
		{"site under cloud, not /http", "https://api.example.com", "https://api.example.com/site",
			[]Route{cloudRoute("https://api.example.com"), siteRoute("https://api.example.com/site")}},
		{"site below cloud + /http", "https://app.fly.dev", "https://app.fly.dev/http/sub",
			[]Route{cloudRoute("https://app.fly.dev"), siteRoute("https://app.fly.dev/http/sub")}},
		{"user info left out", "https://user:pw@api.example.com/", "https://u@site.example.com",
			[]Route{cloudRoute("https://api.example.com/"), siteRoute("https://site.example.com")}},
		{"cloud with a path, site under it", "https://example.com/convex", "https://example.com/convex/http",
			[]Route{cloudRoute("https://example.com/convex")}},
		{"site path not on a segment boundary", "https://example.com/convex", "https://example.com/convexhttp",
			[]Route{cloudRoute("https://example.com/convex"), siteRoute("https://example.com/convexhttp")}},
		{"same host, other port", "https://app.fly.dev", "https://app.fly.dev:8443/http",
			[]Route{cloudRoute("https://app.fly.dev"), siteRoute("https://app.fly.dev:8443/http")}},
		{"same host, other scheme", "https://app.fly.dev", "http://app.fly.dev/http",
			[]Route{cloudRoute("https://app.fly.dev"), siteRoute("http://app.fly.dev/http")}},
		{"host is a prefix of the other", "https://app.fly.dev", "https://app.fly.dev.evil.example/http",
			[]Route{cloudRoute("https://app.fly.dev"), siteRoute("https://app.fly.dev.evil.example/http")}},
		{"cloud with a query is no prefix", "https://app.fly.dev/?x=1", "https://app.fly.dev/http",
			[]Route{cloudRoute("https://app.fly.dev/?x=1"), siteRoute("https://app.fly.dev/http")}},
		{"not URLs: both kept, the preload drops what Node cannot parse", "app.fly.dev", "app.fly.dev/http",
			[]Route{cloudRoute("app.fly.dev"), siteRoute("app.fly.dev/http")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Derive(tc.cloud, tc.site, api, site); !slices.Equal(got, tc.want) {
				t.Errorf("Derive(%q, %q) = %q, want %q", tc.cloud, tc.site, got, tc.want)
			}
		})
	}
}

// odd holds origins that must survive the trip through NODE_OPTIONS and a
// JavaScript string literal.
var odd = []Route{
	{"CONVEX_CLOUD_ORIGIN", `https://a "b" 'c' \d` + "\n\u2028\x00\U0001F600\xff", api},
	{"CONVEX_SITE_ORIGIN", "  https://site.example.com/ ", site},
}

func TestOptionIsOneNodeOptionsWord(t *testing.T) {
	opt := Option(odd)
	data, ok := strings.CutPrefix(opt, "--import=data:text/javascript;base64,")
	if !ok {
		t.Fatalf("option %.60q... does not start with --import=data:", opt)
	}
	if i := strings.IndexFunc(data, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=')
	}); i >= 0 {
		t.Fatalf("option holds %q at %d: Node splits NODE_OPTIONS on spaces and quotes", data[i], i)
	}
	src, err := base64.StdEncoding.DecodeString(data)
	if err != nil || string(src) != Source(odd) {
		t.Fatalf("option does not decode to the source: %v", err)
	}
	if !strings.HasPrefix(opt, marker) {
		t.Errorf("option does not start with the marker")
	}
}

func TestJSString(t *testing.T) {
	for in, want := range map[string]string{
		"https://x.example":  `"https://x.example"`,
		`a"b\c`:              `"a\u0022b\u005cc"`,
		"line\nsep\u2028":    `"line\u000asep\u2028"`,
		"\x00\x7f\xff":       `"\u0000\u007f\ufffd"`,
		"\U0001F600":         `"\ud83d\ude00"`,
		"</script><!-- ${}`": "\"</script><!-- ${}`\"",
	} {
		if got := jsString(in); got != want {
			t.Errorf("jsString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNodeOptions(t *testing.T) {
	routes := Derive("https://api.example.com", "", api, site)
	opt := Option(routes)
	other := Option(Derive("https://other.example.com", "", api, site))
	tests := []struct{ name, user, want string }{
		{"unset", "", opt},
		{"appended after the user's", "--max-old-space-size=512", "--max-old-space-size=512 " + opt},
		{"quoted user values kept as written", `--require "/a b/c.js" --title=x`, `--require "/a b/c.js" --title=x ` + opt},
		{"already there: not twice", "--max-old-space-size=512 " + opt, "--max-old-space-size=512 " + opt},
		{"an earlier copy with other routes is replaced", other + " --inspect", "--inspect " + opt},
		{"trailing spaces", "--inspect  ", "--inspect " + opt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NodeOptions(tc.user, routes)
			if got != tc.want {
				t.Errorf("NodeOptions(%.80q) = %.80q..., want %.80q...", tc.user, got, tc.want)
			}
			if again := NodeOptions(got, routes); again != got {
				t.Errorf("applied twice: %.80q..., want the same as once", again)
			}
		})
	}
}

func TestSetEnv(t *testing.T) {
	routes := Derive("https://api.example.com", "", api, site)
	opt := Option(routes)
	tests := []struct {
		name      string
		env, want []string
	}{
		{"added", []string{"PATH=/bin"}, []string{"PATH=/bin", "NODE_OPTIONS=" + opt}},
		{"every duplicate: getenv reads the first, bash keeps the last", []string{"NODE_OPTIONS=--a", "PATH=/bin", "NODE_OPTIONS=--b"},
			[]string{"NODE_OPTIONS=--a " + opt, "PATH=/bin", "NODE_OPTIONS=--b " + opt}},
		{"empty value", []string{"NODE_OPTIONS="}, []string{"NODE_OPTIONS=" + opt}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			if got := SetEnv(tc.env, routes); !slices.Equal(got, tc.want) {
				t.Errorf("SetEnv = %.200q, want %.200q", got, tc.want)
			}
			if !slices.Equal(tc.env, in) {
				t.Errorf("SetEnv changed its argument")
			}
		})
	}
}

package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/convex-shim/convex-shim/preload"
)

func TestNodeRoutes(t *testing.T) {
	cloud := func(from string) preload.Route {
		return preload.Route{Env: "CONVEX_CLOUD_ORIGIN", From: from, To: "http://127.0.0.1:3210"}
	}
	site := func(from string) preload.Route {
		return preload.Route{Env: "CONVEX_SITE_ORIGIN", From: from, To: "http://127.0.0.1:3211"}
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     func(string) string
		want    []preload.Route
		summary string // in the startup line; "" for no preload part
	}{
		{"no origins", nil, env(), nil, ""},
		{"the backend's own port", nil, env("CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:3210", "CONVEX_SITE_ORIGIN", "http://127.0.0.1:3211"), nil, ""},
		{"public origin", nil, env("CONVEX_CLOUD_ORIGIN", "https://api.example.com"),
			[]preload.Route{cloud("https://api.example.com")},
			"Node callbacks to https://api.example.com -> 127.0.0.1:3210 in the container (fetch preload)"},
		{"Fly guide: site is cloud + /http", nil, env("CONVEX_CLOUD_ORIGIN", "https://app.fly.dev", "CONVEX_SITE_ORIGIN", "https://app.fly.dev/http"),
			[]preload.Route{cloud("https://app.fly.dev")},
			"Node callbacks to https://app.fly.dev -> 127.0.0.1:3210 in the container (fetch preload)"},
		{"separate site name", nil, env("CONVEX_CLOUD_ORIGIN", "https://api.example.com", "CONVEX_SITE_ORIGIN", "https://site.example.com"),
			[]preload.Route{cloud("https://api.example.com"), site("https://site.example.com")},
			"Node callbacks to https://api.example.com -> 127.0.0.1:3210, https://site.example.com -> 127.0.0.1:3211 in the container (fetch preload)"},
		{"site served by the backend itself", nil, env("CONVEX_CLOUD_ORIGIN", "https://api.example.com", "CONVEX_SITE_ORIGIN", "http://127.0.0.1:3211"),
			[]preload.Route{cloud("https://api.example.com")}, "Node callbacks to https://api.example.com -> 127.0.0.1:3210"},
		{"loopback origin: fetch goes straight to 3210", nil, env("CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080"),
			[]preload.Route{cloud("http://127.0.0.1:8080")}, "Node callbacks to http://127.0.0.1:8080 -> 127.0.0.1:3210"},
		// Neither shown nor carried into NODE_OPTIONS, which every Node child inherits.
		{"user info never shown", nil, env("CONVEX_CLOUD_ORIGIN", "https://u:S3CR3T@api.example.com"),
			[]preload.Route{cloud("https://api.example.com")}, "Node callbacks to https://api.example.com -> 127.0.0.1:3210"},
		// Node builds no callback from what its URL parser rejects: no route claimed.
		{"not a URL", nil, env("CONVEX_CLOUD_ORIGIN", "app.fly.dev"), nil, ""},
		{"not http(s)", nil, env("CONVEX_CLOUD_ORIGIN", "ftp://api.example.com"), nil, ""},
		{"turned off by flag", []string{"--node-preload=false"}, env("CONVEX_CLOUD_ORIGIN", "https://api.example.com"), nil, ""},
		{"turned off by env twin", nil, env("CONVEX_SHIM_NODE_PRELOAD", "0", "CONVEX_CLOUD_ORIGIN", "https://api.example.com"), nil, ""},
		{"flag beats env twin", []string{"--node-preload"}, env("CONVEX_SHIM_NODE_PRELOAD", "0", "CONVEX_CLOUD_ORIGIN", "https://api.example.com"),
			[]preload.Route{cloud("https://api.example.com")}, "Node callbacks to https://api.example.com -> 127.0.0.1:3210"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(append(tc.args, "x"), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.nodeRoutes, tc.want) {
				t.Errorf("routes %q, want %q", c.nodeRoutes, tc.want)
			}
			line := summary(c)
			if tc.summary == "" && strings.Contains(line, "preload") || !strings.Contains(line, tc.summary) {
				t.Errorf("summary %q, want it to hold %q", line, tc.summary)
			}
			var all strings.Builder
			for _, n := range c.notices {
				all.WriteString(n.text + "\n")
			}
			all.WriteString(line)
			if strings.Contains(all.String(), "S3CR3T") {
				t.Errorf("logged the password:\n%s", all.String())
			}
			// The "out of the container" notice stays only where the
			// preload does not route; where it does, what still goes out
			// is named instead.
			out, still := strings.Contains(all.String(), "out of the container"), strings.Contains(all.String(), "node:https, axios")
			if public := strings.Contains(tc.name, "public") || strings.Contains(tc.name, "Fly") || strings.Contains(tc.name, "site name"); public && (out || !still) {
				t.Errorf("notices with the preload on:\n%s", all.String())
			}
			if strings.Contains(tc.name, "turned off") && (!out || still) {
				t.Errorf("notices with the preload off:\n%s", all.String())
			}
		})
	}
}

// --check shows each preload route and probes the backend port it targets.
func TestCheckShowsNodeRoutes(t *testing.T) {
	getenv := env("CONVEX_CLOUD_ORIGIN", "https://api.example.com", "CONVEX_SHIM_FORWARD", "off")
	c, err := parse([]string{"--check"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.nodeRoutes {
		c.nodeRoutes[i].To = "http://127.0.0.1:1" // nothing listens: the probe must say so
	}
	var out bytes.Buffer
	code := runCheck(c, &out)
	if code != exitCheckFailed || !strings.Contains(out.String(), "fetch https://api.example.com  127.0.0.1:1  CONVEX_CLOUD_ORIGIN (node preload)  FAIL: connect 127.0.0.1:1") {
		t.Errorf("exit %d, output:\n%s", code, out.String())
	}
}

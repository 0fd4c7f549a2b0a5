package pid1

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The shim gives the backend's Node the preload: with a public origin that
// does not even resolve (the network namespace has no DNS), fetch reaches
// the backend's ports, and the user's NODE_OPTIONS still apply. Off, the
// same fetch fails as upstream's does (#386).
func TestPID1NodePreload(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("this test runs Node, as the Convex backend does: %v (install nodejs 20, 22 or 24)", err)
	}
	script := filepath.Join(t.TempDir(), "backend.cjs")
	// Stands in for the backend's ports and its Node server in one process.
	if err := os.WriteFile(script, []byte(`"use strict";
const http = require("node:http");
const listen = (port) => new Promise((ok) =>
  http.createServer((q, s) => s.end("port " + port + " " + q.url)).listen(port, "127.0.0.1", ok));
Promise.all([listen(3210), listen(3211)]).then(async () => {
  for (const u of process.argv.slice(2)) {
    try {
      console.log("fetch " + u + ": " + (await (await fetch(u)).text()));
    } catch (e) {
      console.log("fetch " + u + ": error " + ((e.cause && e.cause.code) || e.message));
    }
  }
  console.log("heap " + Math.round(require("node:v8").getHeapStatistics().heap_size_limit / 2 ** 20));
  process.exit(0);
});
`), 0o644); err != nil {
		t.Fatal(err)
	}
	urls := []string{"https://convex.example.test/api/actions/query?x=1", "https://convex.example.test/http/hook"}
	for _, tc := range []struct {
		name string
		args []string
		want []string // line prefixes
	}{
		{"on", nil, []string{
			"fetch " + urls[0] + ": port 3210 /api/actions/query?x=1",
			"fetch " + urls[1] + ": port 3210 /http/hook",
		}},
		{"off", []string{"--node-preload=false"}, []string{
			// ENOTFOUND or EAI_AGAIN: the name cannot be resolved.
			"fetch " + urls[0] + ": error E",
			"fetch " + urls[1] + ": error E",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := start(t, opts{PID1: true, Args: tc.args, Program: append([]string{node, script}, urls...), Env: []string{
				"CONVEX_CLOUD_ORIGIN=https://convex.example.test", "CONVEX_SITE_ORIGIN=https://convex.example.test/http",
				"NODE_OPTIONS=--max-old-space-size=512",
			}})
			for _, want := range tc.want {
				u, _, _ := strings.Cut(strings.TrimPrefix(want, "fetch "), ": ")
				if got := in.Line("fetch " + u + ":"); !strings.HasPrefix(got, want) {
					t.Errorf("got %q, want %q", got, want)
				}
			}
			if mib, _ := strconv.Atoi(strings.TrimPrefix(in.Line("heap "), "heap ")); mib < 512 || mib >= 1024 {
				t.Errorf("heap limit %d MiB: the user's --max-old-space-size=512 is not in effect", mib)
			}
			if code := wait(in); code != 0 {
				t.Fatalf("exit %d", code)
			}
			logged := in.Stderr.String()
			summary := "Node callbacks to https://convex.example.test -> 127.0.0.1:3210 in the container (fetch preload)"
			if on := tc.args == nil; on != strings.Contains(logged, summary) || strings.Contains(logged, "convex-shim: node preload:") {
				t.Errorf("shim stderr (preload on: %v):\n%s", on, logged)
			}
		})
	}
}

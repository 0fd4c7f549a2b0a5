package main

import (
	"github.com/convex-shim/convex-shim/forward"
	"strings"
	"testing"
)

// The parsers take operator input from flags and the environment. Whatever
// they are given, they must not panic, and what they accept must be
// consistent: a loopback-only forward set unless --allow-public, each listen
// address once, ports in range. `make test` runs each fuzzer for a bounded
// time; the seed corpus is below and in testdata/fuzz.

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"--forward 127.0.0.1:80=127.0.0.1:3210 -- ./run_backend.sh",
		"--forward off -v x",
		"--grace 0 --stop-signal TERM x",
		"--allow-public --forward 0.0.0.0:80=127.0.0.1:3210 x",
		"--check",
		"--install /tmp",
		"--parent-death-signal none x",
		"-- ",
		"--forward --nope ---x",
		"-v -=x --grace",
	} {
		f.Add(s, "http://localhost:8080", "127.0.0.1:80=127.0.0.1:3210")
	}
	f.Fuzz(func(t *testing.T, args, origin, fwdEnv string) {
		c, err := parse(strings.Fields(args), env("CONVEX_CLOUD_ORIGIN", origin, "CONVEX_SHIM_FORWARD", fwdEnv))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			// flagError always finds the argument flag stopped at.
			if strings.HasPrefix(err.Error(), "bad command line") {
				t.Fatalf("package flag's error not reworded: %q", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, fw := range c.forwards {
			if seen[fw.listen] {
				t.Fatalf("listen address %s twice: %+v", fw.listen, c.forwards)
			}
			seen[fw.listen] = true
			if !c.allowPublic && !forward.IsLoopback(fw.listen) {
				t.Fatalf("non-loopback %s accepted without --allow-public", fw.listen)
			}
			if err := checkHostPort(fw.listen, true); err != nil {
				t.Fatalf("accepted listen %q: %v", fw.listen, err)
			}
		}
	})
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80=127.0.0.1:3210", "[::1]:80=localhost:3210", "a=b", "=", "off", ":80=:1", "127.0.0.1:65535=x:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fw, err := parseForward(spec)
		if err != nil {
			return
		}
		if fw.String() != spec {
			t.Fatalf("parseForward(%q) = %q: does not round-trip", spec, fw)
		}
		if checkHostPort(fw.listen, true) != nil || checkHostPort(fw.target, false) != nil {
			t.Fatalf("parseForward(%q) accepted a bad address", spec)
		}
	})
}

func FuzzRouteOrigin(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1", "HTTP://LOCALHOST:8080/x", "https://a.example", "http://[::1]:9000", "http://127.0.0.1:3210", "garbage", "", "http://[::ffff:127.0.0.1]:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, origin string) {
		for _, port := range []int{apiPort, sitePort} {
			r := routeOrigin("CONVEX_CLOUD_ORIGIN", origin, port)
			for _, fw := range r.forwards {
				if !forward.IsLoopback(fw.listen) {
					t.Fatalf("origin %q: forward on non-loopback %s", origin, fw.listen)
				}
				if err := checkHostPort(fw.listen, true); err != nil {
					t.Fatalf("origin %q: bad listen %q: %v", origin, fw.listen, err)
				}
				if fw.target != "127.0.0.1:3210" && fw.target != "127.0.0.1:3211" {
					t.Fatalf("origin %q: target %q", origin, fw.target)
				}
			}
			if len(r.forwards) > 0 && r.notice != "" {
				t.Fatalf("origin %q: both forwards and a notice", origin)
			}
			if strings.Contains(r.notice, "\n") {
				t.Fatalf("origin %q: multi-line notice", origin)
			}
		}
	})
}

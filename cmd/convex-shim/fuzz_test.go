package main

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/convex-shim/convex-shim/forward"
	"github.com/convex-shim/convex-shim/internal/whatwgurl"
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
		for i, fw := range c.forwards {
			// Two listeners on one address (however written) would stop
			// the shim with "address already in use".
			if j := (&config{forwards: c.forwards[:i]}).forwardIndex(fw.listen); j >= 0 {
				t.Fatalf("listen address %s taken by %s already: %+v", fw.listen, c.forwards[j].listen, c.forwards)
			}
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
	for _, s := range []string{"http://127.0.0.1", "HTTP://LOCALHOST:8080/x", "https://a.example", "http://[::1]:9000", "http://127.0.0.1:3210", "garbage", "", "http://[::ffff:127.0.0.1]:0",
		"http://127.1:080", `http:0x7f.1:8085\x`, " http://0:8094\t", "http://[::]:3210", "http://%31%32%37.1:3211/http", "http://１２７.１"} {
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
				// Listen where Node connects, written one way only.
				ap, err := netip.ParseAddrPort(fw.listen)
				u, perr := whatwgurl.Parse(origin)
				if err != nil || ap.String() != fw.listen || perr != nil || int(ap.Port()) != u.ConnectPort() {
					t.Fatalf("origin %q (%v, %v): listen %q", origin, u, perr, fw.listen)
				}
			}
			if r.served && (len(r.forwards) > 0 || !r.debug) {
				t.Fatalf("origin %q: served by the backend, yet %+v", origin, r)
			}
			if len(r.forwards) > 0 && r.notice != "" {
				t.Fatalf("origin %q: both forwards and a notice", origin)
			}
			if strings.IndexFunc(r.notice, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
				t.Fatalf("origin %q: multi-line notice", origin)
			}
		}
	})
}

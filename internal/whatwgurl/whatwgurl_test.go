package whatwgurl

import (
	"errors"
	"testing"
)

// The origins and the standard's corners, with what Node shows for
// them (hostname, port, pathname); "" host means Parse must fail.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in               string
		host, port, path string
		kind             HostKind
	}{
		{"http://127.0.0.1:080", "127.0.0.1", "", "/", IPv4},
		{"http://localhost:080", "localhost", "", "/", Name},
		{"http://127.1:8080", "127.0.0.1", "8080", "/", IPv4},
		{"http://0x7f.0.0.1:8080", "127.0.0.1", "8080", "/", IPv4},
		{"http://2130706433:8080", "127.0.0.1", "8080", "/", IPv4},
		{"http://%31%32%37.0.0.1:8080", "127.0.0.1", "8080", "/", IPv4},
		{`http://127.0.0.1:8085\foo`, "127.0.0.1", "8085", "/foo", IPv4},
		{"http:127.0.0.1:8082", "127.0.0.1", "8082", "/", IPv4},
		{" http://127.0.0.1:8083 \x00", "127.0.0.1", "8083", "/", IPv4},
		{"http://127.0.\t0.1:80\n84", "127.0.0.1", "8084", "/", IPv4},
		{"http://0.0.0.0:8094", "0.0.0.0", "8094", "/", IPv4},
		{"http://0:8095", "0.0.0.0", "8095", "/", IPv4},
		{"http://[::1]:3210", "[::1]", "3210", "/", IPv6},
		{"http://[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "", "/", IPv6},
		{"http://[1:0:0:2:0:0:0:3]", "[1:0:0:2::3]", "", "/", IPv6},
		{"https://127.0.0.1:0443", "127.0.0.1", "", "/", IPv4},
		{"http://１２７.０.０.１", "127.0.0.1", "", "/", IPv4},
		{"http://u:p@v@LOCALHOST:00/a/../http/", "localhost", "0", "/http/", Name},
		{"http://1.2.3.4..", "1.2.3.4..", "", "/", Name},
		{"http://127.0.0.1:65536", "", "", "", 0},
		{"http://1..2", "", "", "", 0},
		{"http://a b", "", "", "", 0},
		{"http://[::1]x", "", "", "", 0},
		{"http://127.0.0.1：8080", "", "", "", 0}, // a fullwidth colon maps to ":", forbidden in a host
		{"http://xn--a", "", "", "", 0},
		{"http://", "", "", "", 0},
		{"127.0.0.1:80", "", "", "", 0},
	} {
		u, err := Parse(tc.in)
		if tc.host == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: %v, %v; want ErrInvalid", tc.in, u, err)
			}
			continue
		}
		if err != nil || u.Host != tc.host || u.Port != tc.port || u.Path != tc.path || u.Kind != tc.kind {
			t.Errorf("%q: host %q port %q path %q kind %d (%v); want %q %q %q %d", tc.in, u.Host, u.Port, u.Path, u.Kind, err, tc.host, tc.port, tc.path, tc.kind)
		}
	}
	if _, err := Parse("ftp://127.0.0.1"); err == nil || err.Error() != `scheme "ftp" is not http or https` {
		t.Errorf("ftp: %v", err)
	}
}

// agrees must see every difference, or the differential test cannot fail.
func TestAgreesSeesDifferences(t *testing.T) {
	u := URL{Scheme: "http", Host: "127.0.0.1", ASCII: true, Path: "/"}
	n := nodeURL{OK: true, Protocol: "http:", Hostname: "127.0.0.1", Pathname: "/"}
	if !agrees(u, nil, n) {
		t.Fatal("equal results disagree")
	}
	for name, m := range map[string]func(*nodeURL){
		"hostname": func(n *nodeURL) { n.Hostname = "127.0.0.2" },
		"port":     func(n *nodeURL) { n.Port = "80" },
		"path":     func(n *nodeURL) { n.Pathname = "/x" },
		"protocol": func(n *nodeURL) { n.Protocol = "https:" },
		"throws":   func(n *nodeURL) { n.OK = false },
	} {
		d := n
		m(&d)
		if agrees(u, nil, d) {
			t.Errorf("a different %s agrees", name)
		}
	}
	if agrees(URL{}, ErrInvalid, n) || agrees(URL{}, &SchemeError{"ftp"}, n) {
		t.Error("a failure agrees with a parsed http URL")
	}
	uni := URL{Scheme: "http", Host: "bücher.example", Path: "/"}
	if !agrees(uni, nil, nodeURL{OK: true, Protocol: "http:", Hostname: "xn--bcher-kva.example", Pathname: "/"}) ||
		agrees(uni, nil, nodeURL{OK: true, Protocol: "http:", Hostname: "bcher.example", Pathname: "/"}) {
		t.Error("non-ASCII labels compared wrongly")
	}
}

// Whatever the input, Parse does not panic, and what it accepts prints as
// a URL that parses to the same thing.
func FuzzParse(f *testing.F) {
	for _, s := range handPicked {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			return
		}
		v, err := Parse(u.String())
		if err != nil || v != u {
			t.Fatalf("%q parses to %q (%+v), which parses to %+v, %v", s, u.String(), u, v, err)
		}
		if p := u.ConnectPort(); p < 0 || p > 65535 {
			t.Fatalf("%q: port %d", s, p)
		}
		if (u.Kind == Name) == u.Addr.IsValid() {
			t.Fatalf("%q: kind %d with address %v", s, u.Kind, u.Addr)
		}
	})
}

package main

import (
	"reflect"
	"strings"
	"testing"
)

// apiForwards are the forwards an origin asks for to 3210, from the cloud
// origin; an IPv6 listener is optional (the kernel may have no IPv6).
func apiForwards(listens ...string) []forwardSpec {
	var out []forwardSpec
	for _, l := range listens {
		out = append(out, forwardSpec{listen: l, target: "127.0.0.1:3210", from: "CONVEX_CLOUD_ORIGIN", optional: strings.HasPrefix(l, "[")})
	}
	return out
}

func TestRouteOrigin(t *testing.T) {
	api := apiForwards
	for _, tc := range []struct {
		value    string
		forwards []forwardSpec
		notice   string // substring; "" means no notice
		debug    bool
	}{
		{"http://127.0.0.1", api("127.0.0.1:80"), "", false},
		{"http://127.0.0.1/", api("127.0.0.1:80"), "", false},
		{"http://127.0.0.1:80", api("127.0.0.1:80"), "", false},
		{"http://127.0.0.1:8080", api("127.0.0.1:8080"), "", false},
		{"http://127.0.0.1:8080/convex/path?x=1", api("127.0.0.1:8080"), "", false},
		{"http://127.8.9.10:81", api("127.8.9.10:81"), "", false},
		{"HTTP://LOCALHOST", api("127.0.0.1:80", "[::1]:80"), "", false},
		{"http://localhost:8080", api("127.0.0.1:8080", "[::1]:8080"), "", false},
		{"http://[::1]", api("[::1]:80"), "", false},
		{"http://[::1]:9000/", api("[::1]:9000"), "", false},
		{"http://[::ffff:127.0.0.1]:8080", api("127.0.0.1:8080"), "", false},
		{"http://user:pw@127.0.0.1:8080/x", api("127.0.0.1:8080"), "", false},
		{"http://127.0.0.1#frag", api("127.0.0.1:80"), "", false},
		{"http://127.0.0.1?q=1", api("127.0.0.1:80"), "", false},
		{"http://127.0.0.1:", api("127.0.0.1:80"), "", false},
		// As Node's new URL reads them (issue 11): the forward listens
		// where Node connects.
		{"http://127.0.0.1:080", api("127.0.0.1:80"), "", false},
		{"http://localhost:080", api("127.0.0.1:80", "[::1]:80"), "", false},
		{"http://127.0.0.1:00008080", api("127.0.0.1:8080"), "", false},
		{"http://127.1:8080", api("127.0.0.1:8080"), "", false},
		{"http://0x7f.0.0.1:8080", api("127.0.0.1:8080"), "", false},
		{"http://0177.0.0.1:8080", api("127.0.0.1:8080"), "", false},
		{"http://2130706433:8080", api("127.0.0.1:8080"), "", false},
		{"http://%31%32%37.0.0.1:8080", api("127.0.0.1:8080"), "", false},
		{"http://１２７.０.０.１:8080", api("127.0.0.1:8080"), "", false},
		{`http://127.0.0.1:8085\foo`, api("127.0.0.1:8085"), "", false},
		{"http:127.0.0.1:8082", api("127.0.0.1:8082"), "", false},
		{`http:\\127.0.0.1:8082`, api("127.0.0.1:8082"), "", false},
		{"http://127.0.0.1:8083 ", api("127.0.0.1:8083"), "", false},
		{" \t http://127.0.0.1:8083\n", api("127.0.0.1:8083"), "", false},
		{"\x00http://127.0.0.1:8083\x1f", api("127.0.0.1:8083"), "", false},
		{"http://127.0.0.1:80\t84", api("127.0.0.1:8084"), "", false},
		{"http://0.0.0.0:8094", api("127.0.0.1:8094"), "", false}, // Linux connects 0.0.0.0 to 127.0.0.1
		{"http://0.0.0.0", api("127.0.0.1:80"), "", false},
		{"http://0:8095", api("127.0.0.1:8095"), "", false},
		{"http://[::ffff:0.0.0.0]:8096", api("127.0.0.1:8096"), "", false},
		{"http://[::]:8097", api("[::1]:8097"), "", false}, // and :: to ::1
		// The backend listens on 0.0.0.0:3210, IPv4 only: [::1] needs a forward.
		{"http://[::1]:3210", api("[::1]:3210"), "", false},
		{"http://localhost:3210", api("[::1]:3210"), "", false},
		{"http://127.0.0.1:3210", nil, "the backend itself listens on 127.0.0.1:3210", true},
		{"http://127.1:03210/", nil, "the backend itself listens on 127.0.0.1:3210", true},
		{"http://0.0.0.0:3210", nil, "the backend itself listens on 0.0.0.0:3210", true},
		{"http://[::ffff:7f00:1]:3210", nil, "no forward needed", true},
		{"http://127.0.0.1:3211", nil, "port 3211, which is the backend's other port", false},
		{"http://[::1]:3211", nil, "port 3211, which is the backend's other port", false},
		{"https://api.example.com", nil, "out of the container", false},
		{"https://127.0.0.1", nil, "plain HTTP", false},
		{"https://localhost:3210", nil, "plain HTTP", false},
		{"http://10.0.0.5:3210", nil, "10.0.0.5:3210, out of the container", false},
		{"http://convex.internal", nil, "convex.internal:80", false},
		{"http://foo.localhost:8080", nil, "foo.localhost:8080, out of the container", false},
		{"http://localhost.:8080", nil, "out of the container", false}, // getaddrinfo finds no "localhost." in /etc/hosts
		{"http://bücher.example", nil, "bücher.example:80, out of the container", false},
		{"", nil, "", false},
		{"127.0.0.1:80", nil, "is not a URL", false},
		{"localhost", nil, "is not a URL", false},
		{"localhost:8080", nil, `is not a URL such as http://127.0.0.1 (scheme "localhost" is not http or https)`, false},
		{"ftp://127.0.0.1", nil, "is not a URL", false},
		{"http://", nil, "is not a URL", false},
		{"http://[::1]x", nil, "is not a URL", false},
		{"http://a b", nil, "is not a URL", false},
		{"http://127.0.0.1:99999", nil, "is not a URL", false},
		{"http://127.0.0.1：8080", nil, "is not a URL", false}, // fullwidth colon
		{"http://127.0.0.1:0", nil, "not 1 to 65535", false},
		{"::garbage::", nil, "is not a URL", false},
		{"http://[::1", nil, "is not a URL", false},
	} {
		r := routeOrigin("CONVEX_CLOUD_ORIGIN", tc.value, apiPort)
		if !reflect.DeepEqual(r.forwards, tc.forwards) {
			t.Errorf("%q: forwards %+v, want %+v", tc.value, r.forwards, tc.forwards)
		}
		if tc.notice == "" && r.notice != "" || !strings.Contains(r.notice, tc.notice) || r.debug != tc.debug {
			t.Errorf("%q: notice %q (debug %v), want %q (debug %v)", tc.value, r.notice, r.debug, tc.notice, tc.debug)
		}
		if tc.notice != "" && !strings.HasPrefix(r.notice, "CONVEX_CLOUD_ORIGIN") {
			t.Errorf("%q: notice %q does not name the variable", tc.value, r.notice)
		}
	}
}

func TestSiteOriginForwardsTo3211(t *testing.T) {
	r := routeOrigin("CONVEX_SITE_ORIGIN", "http://127.0.0.1:8081", sitePort)
	want := []forwardSpec{{listen: "127.0.0.1:8081", target: "127.0.0.1:3211", from: "CONVEX_SITE_ORIGIN"}}
	if !reflect.DeepEqual(r.forwards, want) || r.notice != "" {
		t.Fatalf("got %+v %q", r.forwards, r.notice)
	}
	if r := routeOrigin("CONVEX_SITE_ORIGIN", "http://127.0.0.1:3210", sitePort); !strings.Contains(r.notice, "stands for port 3211") {
		t.Fatalf("site origin on the API port: %q", r.notice)
	}
	// 3210 serves HTTP actions under /http too (the Fly guide's site origin).
	if r := routeOrigin("CONVEX_SITE_ORIGIN", "http://127.0.0.1:3210/http", sitePort); r.forwards != nil || !r.served {
		t.Fatalf("site origin on 3210/http: %+v", r)
	}
	if r := routeOrigin("CONVEX_SITE_ORIGIN", "http://127.0.0.1:3211/http", sitePort); !strings.Contains(r.notice, "names port 3211, which is the backend's other port; it stands for port 3210") {
		t.Fatalf("site origin on 3211/http: %q", r.notice)
	}
	r = routeOrigin("CONVEX_SITE_ORIGIN", "http://[::1]:3210/x/../http/", sitePort)
	want = []forwardSpec{{listen: "[::1]:3210", target: "127.0.0.1:3210", from: "CONVEX_SITE_ORIGIN", optional: true}}
	if !reflect.DeepEqual(r.forwards, want) || r.notice != "" {
		t.Fatalf("site origin on [::1]:3210/http: %+v %q", r.forwards, r.notice)
	}
}

// servedByBackend is what a Node-side reroute asks: does Node reach the
// backend's own listener for this origin already?
func TestServedByBackend(t *testing.T) {
	for _, tc := range []struct {
		value string
		port  int
		want  bool
	}{
		{"http://127.0.0.1:3210", apiPort, true},
		{"http://127.0.0.1:3210/", apiPort, true},
		{"http://127.5.6.7:3210", apiPort, true},
		{"http://0.0.0.0:3210", apiPort, true},
		{"http://0:3210", apiPort, true},
		{"http://2130706433:3210", apiPort, true},
		{"http://[::ffff:127.0.0.1]:3210", apiPort, true},
		{"http://127.0.0.1:3211", sitePort, true},
		{"http://127.0.0.1:3210/http", sitePort, true},
		{"http://127.0.0.1:3210/http/", sitePort, true},
		{"http://127.0.0.1:3211/http", sitePort, false}, // the site proxy would make it /http/http/…
		{"http://127.0.0.1:3210/httpx", sitePort, false},
		{"http://127.0.0.1:3210", sitePort, false},
		{"http://127.0.0.1:3211", apiPort, false},
		{"http://[::1]:3210", apiPort, false}, // IPv4-only backend: a forward is needed
		{"http://[::]:3210", apiPort, false},
		{"http://localhost:3210", apiPort, false}, // may resolve to ::1 first
		{"http://127.0.0.1", apiPort, false},
		{"http://127.0.0.1:8080", apiPort, false},
		{"https://127.0.0.1:3210", apiPort, false}, // the backend speaks plain HTTP
		{"https://api.example.com", apiPort, false},
		{"http://10.0.0.5:3210", apiPort, false},
		{"not a url", apiPort, false},
		{"", apiPort, false},
	} {
		if got := servedByBackend(tc.value, tc.port); got != tc.want {
			t.Errorf("servedByBackend(%q, %d) = %v, want %v", tc.value, tc.port, got, tc.want)
		}
	}
}

// How origins combine with configured forwards: the default stays,
// configured forwards win a shared address, the cloud origin beats the site
// origin, and the switches turn automatic forwards off.
func TestParseOriginForwards(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		want    []string // listen=target (from)
		notices []string
	}{
		{"port 80 origin merges with the default", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"}, nil},
		{"compose PORT=8080", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080", "CONVEX_SITE_ORIGIN", "http://127.0.0.1:8081"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)", "127.0.0.1:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)", "127.0.0.1:8081=127.0.0.1:3211 (CONVEX_SITE_ORIGIN)"}, nil},
		{"localhost adds ::1", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://localhost"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)", "[::1]:80=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"}, nil},
		{"both origins on port 80: cloud wins", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1", "CONVEX_SITE_ORIGIN", "http://127.0.0.1"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{"CONVEX_SITE_ORIGIN asks to forward 127.0.0.1:80 to 127.0.0.1:3211, but default already forwards it to 127.0.0.1:3210; keeping that"}},
		{"configured forward wins", []string{"--forward", "127.0.0.1:8080=127.0.0.1:9999"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080"},
			[]string{"127.0.0.1:8080=127.0.0.1:9999 (--forward)"},
			[]string{"CONVEX_CLOUD_ORIGIN asks to forward 127.0.0.1:8080 to 127.0.0.1:3210, but --forward already forwards it"}},
		{"configured forwards replace the default, origins still add", []string{"--forward", "127.0.0.1:81=127.0.0.1:3210"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080"},
			[]string{"127.0.0.1:81=127.0.0.1:3210 (--forward)", "127.0.0.1:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"}, nil},
		{"auto off by flag", []string{"--auto-forward=false"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{"callbacks to 127.0.0.1:8080 will be refused"}},
		{"auto off by env", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080", "CONVEX_SHIM_AUTO_FORWARD", "0"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"}, []string{"will be refused"}},
		{"flag beats env twin", []string{"--auto-forward"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080", "CONVEX_SHIM_AUTO_FORWARD", "0"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)", "127.0.0.1:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"}, nil},
		{"forward off means none at all", []string{"--forward", "off"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080"},
			nil, []string{"will be refused"}},
		{"https origin, preload off: a notice, no forward", []string{"--node-preload=false"},
			[]string{"CONVEX_CLOUD_ORIGIN", "https://app.fly.dev"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{"CONVEX_CLOUD_ORIGIN is https://app.fly.dev: Node actions call back to app.fly.dev:443, out of the container"}},
		{"https origin, preload on: fetch stays inside, no forward", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "https://app.fly.dev"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{"CONVEX_CLOUD_ORIGIN is https://app.fly.dev: Node's fetch calls to it stay in the container (fetch preload)"}},
		{"port 080 is the default's 80: one listener, no collision", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:080", "CONVEX_SITE_ORIGIN", "http://127.1:0080"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{"CONVEX_SITE_ORIGIN asks to forward 127.0.0.1:80 to 127.0.0.1:3211, but default already forwards it to 127.0.0.1:3210; keeping that"}},
		{"0.0.0.0 and localhost on one port", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://0.0.0.0:8080", "CONVEX_SITE_ORIGIN", "http://localhost:8081"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)", "127.0.0.1:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)",
				"127.0.0.1:8081=127.0.0.1:3211 (CONVEX_SITE_ORIGIN)", "[::1]:8081=127.0.0.1:3211 (CONVEX_SITE_ORIGIN)"}, nil},
		{"a configured forward written with leading zeros", []string{"--forward", "127.0.0.1:080=127.0.0.1:3210"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1"},
			[]string{"127.0.0.1:080=127.0.0.1:3210 (--forward)"}, nil},
		{"a wildcard forward takes the origin's port", []string{"--allow-public", "--forward", "0.0.0.0:8080=127.0.0.1:3210"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://localhost:8080"},
			[]string{"0.0.0.0:8080=127.0.0.1:3210 (--forward)", "[::1]:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"}, nil},
		{"[::] takes both families", []string{"--allow-public", "--forward", "[::]:8080=127.0.0.1:3210"},
			[]string{"CONVEX_CLOUD_ORIGIN", "http://localhost:8080"},
			[]string{"[::]:8080=127.0.0.1:3210 (--forward)"}, nil},
		{"site origin is the cloud origin plus /http (the Fly guide's shape)", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "http://127.0.0.1:8080", "CONVEX_SITE_ORIGIN", "http://127.0.0.1:8080/http"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)", "127.0.0.1:8080=127.0.0.1:3210 (CONVEX_CLOUD_ORIGIN)"}, nil},
		{"bad origin: a warning, not an error", nil,
			[]string{"CONVEX_CLOUD_ORIGIN", "127.0.0.1:8080"},
			[]string{"127.0.0.1:80=127.0.0.1:3210 (default)"},
			[]string{`CONVEX_CLOUD_ORIGIN="127.0.0.1:8080" is not a URL`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(append(tc.args, "./run_backend.sh"), env(tc.env...))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range c.forwards {
				got = append(got, f.String()+" ("+f.from+")")
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("forwards %q, want %q", got, tc.want)
			}
			var notes []string
			for _, n := range c.notices {
				if !n.debug {
					notes = append(notes, n.text)
				}
			}
			if len(notes) != len(tc.notices) {
				t.Fatalf("notices %q, want %d like %q", notes, len(tc.notices), tc.notices)
			}
			for i, n := range tc.notices {
				if !strings.Contains(notes[i], n) {
					t.Errorf("notice %q lacks %q", notes[i], n)
				}
			}
		})
	}
}

// Secrets in the environment never reach a log line or the routing table.
func TestNoticesNeverNameSecrets(t *testing.T) {
	secrets := []string{"INSTANCE_SECRET", "s3cr3t-value", "POSTGRES_URL", "postgres://u:pw@db/x"}
	c, err := parse([]string{"--check"}, env(
		"INSTANCE_SECRET", "s3cr3t-value", "POSTGRES_URL", "postgres://u:pw@db/x",
		"CONVEX_CLOUD_ORIGIN", "https://a.example", "CONVEX_SITE_ORIGIN", "nonsense"))
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, n := range c.notices {
		all.WriteString(n.text)
	}
	all.WriteString(summary(config{forwards: c.forwards, program: []string{"x"}}))
	for _, s := range secrets {
		if strings.Contains(all.String(), s) {
			t.Errorf("%q logged", s)
		}
	}
}

// An origin may carry a password; no notice may show it.
func TestOriginNoticesRedactCredentials(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"https://convex:S3CR3T@api.example.com/x", "https://xxxxx@api.example.com/x"},
		{"http://u:S3CR3T@127.0.0.1:3211", "http://xxxxx@127.0.0.1:3211"},
		{"https://api.example.com/a@b", "https://api.example.com/a@b"}, // @ in the path is no user info
		{"postgres://u:S3CR3T@db", "postgres://xxxxx@db"},
		{"u:S3CR3T@db", "<11 characters, not shown>"},
	} {
		if got := redactOrigin(tc.value); got != tc.want {
			t.Errorf("redactOrigin(%q) = %q, want %q", tc.value, got, tc.want)
		}
		for _, port := range []int{apiPort, sitePort} {
			if r := routeOrigin("CONVEX_CLOUD_ORIGIN", tc.value, port); strings.Contains(r.notice, "S3CR3T") {
				t.Errorf("notice for %q shows the password: %q", tc.value, r.notice)
			}
		}
	}
	c, _ := parse([]string{"--auto-forward=false", "x"}, env("CONVEX_CLOUD_ORIGIN", "http://a:S3CR3T@127.0.0.1:8080"))
	for _, n := range c.notices {
		if strings.Contains(n.text, "S3CR3T") {
			t.Errorf("notice shows the password: %q", n.text)
		}
	}
}

package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The backend's fixed ports (run_backend.sh passes them; IPv4, 0.0.0.0).
const (
	apiPort  = 3210 // API: sync, /api/actions/* callbacks, /api/storage/*
	sitePort = 3211 // HTTP actions
)

// origins are the variables whose URLs Node actions call: the backend hands
// CONVEX_CLOUD_ORIGIN to the Node executor, which builds every callback as
// new URL("/api/actions/<op>", origin); site URLs come from
// CONVEX_SITE_ORIGIN. The first one wins a shared listen address.
var origins = []struct {
	env  string
	port int // the backend port the origin stands for
}{
	{"CONVEX_CLOUD_ORIGIN", apiPort},
	{"CONVEX_SITE_ORIGIN", sitePort},
}

// whatGoes says, per backend port, what travels to the origin's address.
var whatGoes = map[int]string{
	apiPort:  "Node actions call back",
	sitePort: "calls to HTTP actions made from inside (Node actions fetching the site URL) go",
}

// originRoute is what one origin asks of the shim.
type originRoute struct {
	forwards []forwardSpec // loopback listeners to add
	notice   string        // one line for the operator, if any
	debug    bool          // the notice is routine: log it only with -v
}

// routeOrigin decides what an origin URL needs. Values are logged (they are
// URLs, not secrets); nothing else from the environment is.
func routeOrigin(env, value string, backendPort int) originRoute {
	if value == "" {
		return originRoute{}
	}
	// Only the redacted form is ever logged: an origin may carry a password.
	raw := value
	value = redactOrigin(raw)
	scheme, host, port, ok := splitOrigin(raw)
	if !ok {
		return originRoute{notice: fmt.Sprintf("%s=%q is not a URL such as http://127.0.0.1; no forward derived from it (Node actions will fail to call back)", env, value)}
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return originRoute{notice: fmt.Sprintf("%s=%q has port %q, not 1 to 65535; no forward derived from it", env, value, port)}
	}
	where := net.JoinHostPort(host, port)

	var ips []netip.Addr
	if host == "localhost" {
		// Node tries both families for localhost; [::1] is optional because
		// the kernel may have no IPv6.
		ips = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		ips = []netip.Addr{ip.Unmap()}
	}
	if ips == nil {
		return originRoute{notice: fmt.Sprintf("%s is %s: %s to %s, out of the container, so the container must reach that address (DNS, routing, TLS). "+
			"A loopback origin such as http://127.0.0.1:%d keeps them inside, but the backend also gives this origin to clients, and upstream has no separate internal callback URL",
			env, value, whatGoes[backendPort], where, backendPort)}
	}
	if scheme == "https" {
		return originRoute{notice: fmt.Sprintf("%s=%s is https on a loopback address: the backend speaks plain HTTP, so callbacks to %s fail; use http://127.0.0.1", env, value, where)}
	}

	n, _ := strconv.Atoi(port)
	switch n {
	case backendPort:
		return originRoute{debug: true, notice: fmt.Sprintf("%s=%s: the backend itself listens on %s; no forward needed", env, value, where)}
	case apiPort, sitePort:
		return originRoute{notice: fmt.Sprintf("%s=%s names port %d, which is the backend's other port; it stands for port %d, so check the value", env, value, n, backendPort)}
	}
	r := originRoute{}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(backendPort))
	for i, ip := range ips {
		r.forwards = append(r.forwards, forwardSpec{
			listen:   net.JoinHostPort(ip.String(), port),
			target:   target,
			from:     env,
			optional: i > 0,
		})
	}
	return r
}

// splitOrigin takes an origin URL apart as WHATWG's URL parser, which Node
// uses, would for the parts that decide where a callback goes: scheme (lower
// case), host (lower case, IPv6 without brackets) and port (empty if none).
// Path, query, fragment and user info do not matter. (Not net/url: it is
// 10 KB of binary for these few lines.)
func splitOrigin(origin string) (scheme, host, port string, ok bool) {
	if strings.IndexFunc(origin, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return "", "", "", false // spaces and control characters: a pasting accident
	}
	scheme, rest, found := strings.Cut(origin, "://")
	scheme = strings.ToLower(scheme)
	if !found || (scheme != "http" && scheme != "https") {
		return "", "", "", false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	host = rest
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", "", "", false
		}
		host, rest = rest[1:end], rest[end+1:]
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return "", "", "", false
		}
		port = strings.TrimPrefix(rest, ":")
	} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host, port = rest[:i], rest[i+1:]
	}
	if host == "" || strings.ContainsAny(host, " []") || strings.Contains(port, ":") {
		return "", "", "", false
	}
	return scheme, strings.ToLower(host), port, true
}

// redactOrigin hides user info ("user:password@") in an origin, so that a
// notice that names the origin cannot leak a credential.
func redactOrigin(origin string) string {
	if strings.IndexFunc(origin, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		// A log line must stay one line, whatever the variable holds.
		return strconv.Quote(redactOrigin(strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, origin)))
	}
	_, rest, found := strings.Cut(origin, "://")
	if !found {
		// Not URL-shaped, but with user info in it: say only how long it
		// is. A plain mistake such as 127.0.0.1:8080 is shown as it is.
		if strings.Contains(origin, "@") {
			return fmt.Sprintf("<%d characters, not shown>", len(origin))
		}
		return origin
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return origin
	}
	prefix := origin[:len(origin)-len(rest)]
	return prefix + "xxxxx@" + rest[at+1:]
}

// addOriginForwards adds the forwards the origins ask for to c.forwards,
// keeping any forward already configured for the same listen address, and
// records the notices to log at startup.
func addOriginForwards(c *config, getenv func(string) string) {
	for _, o := range origins {
		r := routeOrigin(o.env, getenv(o.env), o.port)
		if r.notice != "" {
			c.notices = append(c.notices, notice{r.notice, r.debug})
		}
		if !c.autoForward {
			if len(r.forwards) > 0 && c.forwardIndex(r.forwards[0].listen) < 0 {
				c.notices = append(c.notices, notice{fmt.Sprintf("%s=%s: Node callbacks to %s will be refused, since automatic forwards are off and no --forward listens there", o.env, redactOrigin(getenv(o.env)), r.forwards[0].listen), false})
			}
			continue
		}
		for _, f := range r.forwards {
			if i := c.forwardIndex(f.listen); i >= 0 {
				if have := c.forwards[i]; have.target != f.target {
					c.notices = append(c.notices, notice{fmt.Sprintf("%s asks to forward %s to %s, but %s already forwards it to %s; keeping that", f.from, f.listen, f.target, have.from, have.target), false})
				}
				continue
			}
			c.forwards = append(c.forwards, f)
		}
	}
}

func (c *config) forwardIndex(listen string) int {
	for i, f := range c.forwards {
		if f.listen == listen {
			return i
		}
	}
	return -1
}

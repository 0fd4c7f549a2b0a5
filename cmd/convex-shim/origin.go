package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/convex-shim/convex-shim/internal/whatwgurl"
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
	// served: Node's calls to the origin reach the backend's own listener
	// with no forward (see servedByBackend).
	served bool
}

// servedByBackend reports whether every connection Node makes for value
// (an origin URL, parsed as Node parses it) reaches the backend's own
// listener for backendPort, so neither a forward nor any rerouting is
// needed: plain http to 0.0.0.0 or an address in 127.0.0.0/8 (also
// IPv4-mapped) on backendPort; for a site origin (backendPort 3211) with a
// path under /http, on 3210, which serves HTTP actions there as the site
// proxy on 3211 does at the root. localhost is not: Node may resolve it to ::1 first, where the
// backend (IPv4 only) does not listen; routeOrigin forwards [::1] for it.
func servedByBackend(value string, backendPort int) bool {
	return routeOrigin("", value, backendPort).served
}

// routeOrigin decides what an origin URL needs. The host and port come from
// WHATWG URL parsing, as Node's new URL gives them, so that the forward
// listens where Node will connect (http://127.1:080 is 127.0.0.1:80).
// Values are logged redacted (user info hidden); nothing else from the
// environment is.
func routeOrigin(env, value string, backendPort int) originRoute {
	if value == "" {
		return originRoute{}
	}
	shown := redactOrigin(value) // an origin may carry a password
	u, err := whatwgurl.Parse(value)
	if err != nil {
		why := "Node's new URL rejects it"
		if se := (*whatwgurl.SchemeError)(nil); errors.As(err, &se) {
			why = se.Error()
		}
		return originRoute{notice: fmt.Sprintf("%s=%q is not a URL such as http://127.0.0.1 (%s); no forward derived from it (Node actions will fail to call back)", env, shown, why)}
	}
	port := u.ConnectPort()
	where := printable(u.Host + ":" + strconv.Itoa(port))
	if port == 0 {
		return originRoute{notice: fmt.Sprintf("%s=%q has port 0, not 1 to 65535; no forward derived from it", env, shown)}
	}
	targets := localTargets(u)
	if targets == nil {
		return originRoute{notice: fmt.Sprintf("%s is %s: %s to %s, out of the container, so the container must reach that address (DNS, routing, TLS). "+
			"A loopback origin such as http://127.0.0.1:%d keeps them inside, but the backend also gives this origin to clients, and upstream has no separate internal callback URL",
			env, shown, whatGoes[backendPort], where, backendPort)}
	}
	if u.Scheme == "https" {
		return originRoute{notice: fmt.Sprintf("%s=%s is https on a loopback address: the backend speaks plain HTTP, so callbacks to %s fail; use http://127.0.0.1", env, shown, where)}
	}

	// The backend's 3210 also serves HTTP actions under /http (facts §11,
	// the Fly guide's site origin is the cloud origin plus /http), so a
	// site origin with that path stands for 3210, where the path means
	// what it says; on 3211 it would become /http/http/….
	serving := backendPort
	if backendPort == sitePort && (u.Path == "/http" || strings.HasPrefix(u.Path, "/http/")) {
		serving = apiPort
	}
	if port != serving && (port == apiPort || port == sitePort) {
		return originRoute{notice: fmt.Sprintf("%s=%s names port %d, which is the backend's other port; it stands for port %d, so check the value", env, shown, port, serving)}
	}
	r := originRoute{}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(serving))
	for i, ip := range targets {
		if ip.Is4() && port == serving {
			continue // the backend listens on 0.0.0.0, which all of 127/8 reaches
		}
		r.forwards = append(r.forwards, forwardSpec{
			listen: netip.AddrPortFrom(ip, uint16(port)).String(),
			target: target,
			from:   env,
			// [::1] is optional: the kernel may have no IPv6, and then
			// Node cannot connect there either.
			optional: i > 0 || ip.Is6(),
		})
	}
	if r.forwards == nil {
		r.served, r.debug = true, true
		r.notice = fmt.Sprintf("%s=%s: the backend itself listens on %s; no forward needed", env, shown, where)
	}
	return r
}

// localTargets are the addresses on this machine that Node connects to for
// u, or nil when it connects elsewhere. Linux connects 0.0.0.0 to 127.0.0.1
// and :: to ::1; an IPv4-mapped address is its IPv4 address. localhost is
// both families: Node 20 and later resolve it with getaddrinfo and try each
// address (autoSelectFamily), and Docker's /etc/hosts lists both. Other
// names, *.localhost included, go to DNS: nothing routes them here.
func localTargets(u whatwgurl.URL) []netip.Addr {
	switch u.Kind {
	case whatwgurl.Name:
		if u.Host == "localhost" {
			return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
		}
		return nil
	}
	ip := u.Addr.Unmap()
	switch {
	case ip.Is4() && ip.IsUnspecified():
		return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	case ip.Is6() && ip.IsUnspecified():
		return []netip.Addr{netip.IPv6Loopback()}
	case ip.IsLoopback():
		return []netip.Addr{ip}
	}
	return nil
}

// printable quotes s when it holds anything that is not printable, so that
// a notice stays one readable line.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// redactOrigin hides user info ("user:password@") in an origin, so that a
// notice that names the origin cannot leak a credential.
func redactOrigin(origin string) string {
	if strings.IndexFunc(origin, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
		// A log line must stay one line, whatever the variable holds
		// (U+0085 and U+2028 end lines too, for some viewers).
		return strconv.Quote(redactOrigin(strings.Map(func(r rune) rune {
			if !strconv.IsPrint(r) {
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

// forwardIndex finds the configured forward that already takes
// connections for listen: the same address and port however written
// (127.0.0.1:080 is 127.0.0.1:80), or a wildcard listener on that port
// (0.0.0.0 takes IPv4, :: both families), which a second bind would
// collide with.
func (c *config) forwardIndex(listen string) int {
	want, werr := netip.ParseAddrPort(listen)
	for i, f := range c.forwards {
		if f.listen == listen {
			return i
		}
		have, err := netip.ParseAddrPort(f.listen)
		if err != nil || werr != nil || have.Port() != want.Port() {
			continue
		}
		h, w := have.Addr().Unmap(), want.Addr().Unmap()
		if h == w || h.IsUnspecified() && (h.Is6() || w.Is4()) {
			return i
		}
	}
	return -1
}

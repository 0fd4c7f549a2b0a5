package main

import (
	"strconv"
	"strings"

	"github.com/convex-shim/convex-shim/internal/whatwgurl"
	"github.com/convex-shim/convex-shim/preload"
)

// backendBase is where the preload sends a route's calls: the backend's
// own port, by loopback, as the forwards do.
func backendBase(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// setNodeRoutes decides, once at start, what the Node fetch preload
// routes: every origin that the backend does not serve itself. A public
// origin's calls then stay in the container, so its notice that they go
// out is replaced by one naming what still does.
func setNodeRoutes(c *config, getenv func(string) string) {
	if !c.nodePreload {
		return
	}
	value := map[int]string{}
	for _, o := range origins {
		v := getenv(o.env)
		if v == "" || servedByBackend(v, o.port) {
			continue
		}
		// What Node cannot parse as an http(s) URL, no callback is built
		// from; the preload would drop it, so no route is claimed for it.
		if _, err := whatwgurl.Parse(v); err != nil {
			continue
		}
		value[o.port] = v
	}
	c.nodeRoutes = preload.Derive(value[apiPort], value[sitePort], backendBase(apiPort), backendBase(sitePort))
	for _, o := range origins {
		v, ok := value[o.port]
		if !ok {
			continue
		}
		// The notice is routeOrigin's (origin.go); its wording is the key.
		out := o.env + " is " + redactOrigin(v) + ": "
		https := o.env + "=" + redactOrigin(v) + " is https on a loopback address"
		for i, n := range c.notices {
			switch {
			case strings.HasPrefix(n.text, out) && strings.Contains(n.text, "out of the container"):
				c.notices[i] = notice{text: out + "Node's fetch calls to it stay in the container (fetch preload); " +
					"node:https, axios and other HTTP clients in user code, and the backend's own calls to it (OIDC discovery for Convex Auth), still go out to that address"}
			case strings.HasPrefix(n.text, https):
				c.notices[i] = notice{text: https + ": the backend speaks plain HTTP, so only Node's fetch calls to it work (the fetch preload sends them to " +
					backendBase(o.port) + "); other clients' calls fail; use http://127.0.0.1"}
			}
		}
	}
}

// nodeRoutesText says what the preload sends where, for the startup line.
func nodeRoutesText(routes []preload.Route) string {
	var parts []string
	for _, r := range routes {
		parts = append(parts, redactOrigin(r.From)+" -> "+strings.TrimPrefix(r.To, "http://"))
	}
	return "Node callbacks to " + strings.Join(parts, ", ") + " in the container (fetch preload)"
}

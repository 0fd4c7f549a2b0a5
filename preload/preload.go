// Package preload builds the Node preload that keeps fetch callbacks inside
// the container, and the NODE_OPTIONS value that loads it.
//
// The Convex Node executor calls the backend back through the global fetch
// at new URL(path, CONVEX_CLOUD_ORIGIN); with a public origin every
// callback leaves the container and must come back through the public edge
// (get-convex/convex-backend#386). The backend starts Node with its own
// environment unchanged (crates/node_executor/src/local.rs l.168-196,
// 94a42c3), so a NODE_OPTIONS set for the backend reaches Node. The
// preload (preload.mjs, beside this file) wraps globalThis.fetch: a URL
// under a route's From goes to its To, everything else passes untouched.
//
// No file is written: the preload travels in NODE_OPTIONS itself, as
// --import=data:text/javascript;base64,..., so there is nothing on disk
// that another user could replace and nothing a restart could trip over,
// and a read-only root filesystem does not matter. --import exists since
// Node 18.18 and 20.0; upstream accepts only Node 20, 22 and 24.
package preload

import (
	_ "embed"
	"encoding/base64"
	"strings"
	"unicode/utf16"
)

//go:embed preload.mjs
var source string

// Route sends fetches whose URL lies under From to To.
type Route struct {
	Env  string // the variable From comes from, for logs
	From string // an origin as set: a URL prefix, path included
	To   string // a base URL in the container, such as http://127.0.0.1:3210
}

// optionPrefix starts every NODE_OPTIONS entry this package writes. What
// follows it is base64 of the source, whose first bytes never change (the
// routes come last), so an earlier copy is recognised by marker.
const optionPrefix = "--import=data:text/javascript;base64,"

var marker = optionPrefix + base64.StdEncoding.EncodeToString([]byte(source[:48]))

// Derive returns the routes for the cloud origin (to apiBase) and the site
// origin (to siteBase), in that order; an empty origin gives none. A site
// origin that is exactly the cloud origin plus "/http" (the Fly guide's)
// gets no route of its own: the cloud route sends it to /http/... on the
// API port, which is where the site port's proxy sends it too
// (crates/local_backend/src/config.rs l.182-184, 94a42c3). Any other site
// origin, under the cloud origin or not, keeps its route to the site port:
// a proxy that sends /site/* there strips the prefix, which the cloud route
// would not. Should the comparison here miss a spelling of cloud + "/http",
// the preload's longest prefix picks the site route, which reaches the same
// handler through the site port. User info is left out of the routes: the
// preload matches on scheme, host and path, and NODE_OPTIONS, which every
// Node child inherits, need not carry a password.
func Derive(cloud, site, apiBase, siteBase string) []Route {
	var routes []Route
	if cloud != "" {
		routes = append(routes, Route{"CONVEX_CLOUD_ORIGIN", withoutUserinfo(cloud), apiBase})
	}
	if site != "" && !(cloud != "" && isCloudHTTP(site, cloud)) {
		routes = append(routes, Route{"CONVEX_SITE_ORIGIN", withoutUserinfo(site), siteBase})
	}
	return routes
}

// isCloudHTTP reports whether site is cloud + "/http", with or without a
// trailing slash, compared as under compares.
func isCloudHTTP(site, cloud string) bool {
	c := strings.TrimSuffix(strings.TrimSpace(cloud), "/") + "/http"
	s := strings.TrimSuffix(strings.TrimSpace(site), "/")
	return len(s) == len(c) && under(s, c)
}

// withoutUserinfo drops "user:password@" from an origin's authority.
func withoutUserinfo(origin string) string {
	scheme, rest, ok := strings.Cut(origin, "//")
	if !ok {
		return origin
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#\\"); i >= 0 {
		end = i
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		return scheme + "//" + rest[at+1:]
	}
	return origin
}

// under reports whether URL u lies under prefix p on a path segment
// boundary, comparing scheme and host without regard to case and ignoring
// surrounding spaces, as Node's URL parser does. It is conservative: a
// false answer only costs one hop through the site port.
func under(u, p string) bool {
	u, p = strings.TrimSpace(u), strings.TrimSuffix(strings.TrimSpace(p), "/")
	su, sp := strings.Index(u, "://"), strings.Index(p, "://")
	if su < 0 || sp < 0 {
		return false
	}
	hostEnd := func(s string, from int) int {
		if i := strings.IndexAny(s[from:], "/?#"); i >= 0 {
			return from + i
		}
		return len(s)
	}
	eu, ep := hostEnd(u, su+3), hostEnd(p, sp+3)
	if !strings.EqualFold(u[:eu], p[:ep]) || strings.ContainsAny(p[ep:], "?#") {
		return false
	}
	rest, ok := strings.CutPrefix(u[eu:], p[ep:])
	return ok && (rest == "" || rest[0] == '/' || rest[0] == '?' || rest[0] == '#')
}

// Source returns the preload's JavaScript with the routes written in.
func Source(routes []Route) string {
	var b strings.Builder
	b.WriteString(source)
	b.WriteString("function ROUTES() {\n  return [\n")
	for _, r := range routes {
		b.WriteString("    { env: " + jsString(r.Env) + ", from: " + jsString(r.From) + ", to: " + jsString(r.To) + " },\n")
	}
	b.WriteString("  ];\n}\n")
	return b.String()
}

// Option returns the NODE_OPTIONS entry that loads the preload. It holds
// only base64 characters after the prefix: no space or quote, which Node
// would take as separators when it splits NODE_OPTIONS.
func Option(routes []Route) string {
	return optionPrefix + base64.StdEncoding.EncodeToString([]byte(Source(routes)))
}

// NodeOptions returns the user's NODE_OPTIONS value with the preload
// appended after a space. An earlier copy of the preload (a shim started
// under another) is taken out first, so the value holds exactly one, with
// the current routes; the user's own options are kept as written.
func NodeOptions(user string, routes []Route) string {
	var kept []string
	for _, part := range strings.Split(user, " ") {
		if !strings.HasPrefix(part, marker) {
			kept = append(kept, part)
		}
	}
	v := strings.TrimRight(strings.Join(kept, " "), " ")
	if v != "" {
		v += " "
	}
	return v + Option(routes)
}

// SetEnv returns env with NODE_OPTIONS set to NodeOptions of its current
// value. Every NODE_OPTIONS entry gets the preload: with duplicates, getenv(3)
// (and so a Node started directly) reads the first, but bash, which
// run_backend.sh is, keeps the last.
func SetEnv(env []string, routes []Route) []string {
	out := append([]string(nil), env...)
	found := false
	for i, kv := range out {
		if v, ok := strings.CutPrefix(kv, "NODE_OPTIONS="); ok {
			out[i] = "NODE_OPTIONS=" + NodeOptions(v, routes)
			found = true
		}
	}
	if !found {
		out = append(out, "NODE_OPTIONS="+NodeOptions("", routes))
	}
	return out
}

// jsString quotes s as a JavaScript string literal, escaping everything
// outside printable ASCII, so no origin can end the literal or the line.
// (Not strconv.Quote: its \a and \U escapes are not JavaScript. Not
// encoding/json: it would add its reflection to the binary for three
// strings.)
func jsString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r >= 0x20 && r < 0x7f && r != '"' && r != '\\':
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			b.WriteString(uEscape(r1) + uEscape(r2))
		default:
			b.WriteString(uEscape(r))
		}
	}
	b.WriteByte('"')
	return b.String()
}

func uEscape(r rune) string {
	const hex = "0123456789abcdef"
	return `\u` + string([]byte{hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15]})
}

// convex-shim node preload: fetch stays inside the container. Loaded by
// NODE_OPTIONS=--import=data:text/javascript;base64,... (see preload.go),
// it replaces globalThis.fetch with a wrapper that sends every URL under
// a Convex origin to the backend's own port, and passes all else as is.
//
// Rules, as for any code loaded into someone else's process:
//   - Nothing is read from the environment: the routes are written into
//     this source, because the Convex Node executor replaces process.env
//     before each action (node-executor/src/executor.ts l.101-131, 94a42c3).
//   - Nothing throws out of it. A throw at load would stop Node from
//     starting, and upstream then fails every Node action (5 s health
//     check, crates/node_executor/src/local.rs l.114-125). Any failure
//     leaves fetch stock, with one line on stderr at load.
//   - Feature-detected, not version-checked: upstream runs Node 20, 22, 24.
//   - The wrapper never buffers a body: a request's body (string, bytes,
//     stream) and the response are passed on as they are.
//# sourceURL=convex-shim-node-preload.mjs

const installed = Symbol.for("convex-shim.node-preload");

function say(why) {
  try {
    process.stderr.write("convex-shim: node preload: " + why + "\n");
  } catch {
    // No stderr to write to: stay silent rather than throw.
  }
}

function describe(err) {
  try {
    return String((err && err.message) || err).split("\n")[0];
  } catch {
    return "unknown error";
  }
}

// A path prefix without its trailing slash, so that "/http" matches
// "/http" and "/http/..." but not "/httpx"; "/" becomes "".
function trimSlash(path) {
  return path.endsWith("/") ? path.slice(0, -1) : path;
}

// compile turns the baked-in routes into what the wrapper compares, parsed
// by Node's own URL parser, as the executor parses the origin it builds
// callbacks from. A route whose origin Node cannot parse is dropped: no
// callback URL can be built from such an origin either.
function compile(specs) {
  const routes = [];
  for (const s of specs) {
    let from, to;
    try {
      from = new URL(s.from);
      to = new URL(s.to);
    } catch {
      continue;
    }
    if (from.protocol !== "http:" && from.protocol !== "https:") continue;
    routes.push({
      protocol: from.protocol,
      host: from.host, // with the port, unless it is the scheme's default
      path: trimSlash(from.pathname),
      to: to.origin + trimSlash(to.pathname),
    });
  }
  // Longest prefix first; the sort is stable, so on a tie the cloud
  // origin, listed first, wins.
  routes.sort((a, b) => b.path.length - a.path.length);
  return routes;
}

// target returns where a URL is sent instead, or undefined to leave it.
function target(routes, href) {
  let u;
  try {
    u = new URL(href);
  } catch {
    return undefined; // fetch itself rejects it as it would without us
  }
  if (u.username !== "" || u.password !== "") return undefined; // fetch refuses these
  for (const r of routes) {
    if (u.protocol !== r.protocol || u.host !== r.host) continue;
    const p = u.pathname;
    if (p !== r.path && !p.startsWith(r.path + "/")) continue;
    return r.to + p.slice(r.path.length) + u.search; // a fragment is never sent
  }
  return undefined;
}

// rebuild makes a Request for a new URL that carries everything else of
// the original: method, headers, body stream, signal and the rest.
function rebuild(Request, req, url) {
  const init = {
    method: req.method,
    headers: req.headers,
    signal: req.signal,
    redirect: req.redirect,
    referrer: req.referrer,
    referrerPolicy: req.referrerPolicy,
    credentials: req.credentials,
    cache: req.cache,
    integrity: req.integrity,
    // keepalive caps a body at 64 KiB and refuses a stream one, which the
    // body passed on below is: keep it only for a request without a body.
    keepalive: req.keepalive && req.body === null,
  };
  if (req.mode !== "navigate") init.mode = req.mode;
  if (req.body !== null) {
    init.body = req.body; // the original's stream, read as it is sent
    init.duplex = "half"; // required with a stream body (Node 20+)
  }
  return new Request(url, init);
}

function install(specs) {
  const g = globalThis;
  if (g[installed]) return; // a second copy of the preload: the first one routes
  const stock = g.fetch;
  if (typeof stock !== "function") {
    say("this Node (" + process.version + ") has no global fetch; Node callbacks go to the origins' public addresses");
    return;
  }
  const URLClass = g.URL;
  const Request = g.Request;
  if (typeof URLClass !== "function" || typeof Request !== "function") {
    say("this Node (" + process.version + ") has fetch but no global URL or Request; fetch left as is");
    return;
  }
  const routes = compile(specs);
  if (routes.length === 0) return; // no origin Node can parse: nothing to route

  // An ordinary function, as Node's own fetch is; "this" is passed on.
  const wrapper = function fetch(input) {
    let args = arguments;
    try {
      let url;
      if (typeof input === "string") {
        url = target(routes, input);
      } else if (input instanceof URLClass) {
        url = target(routes, input.href);
      } else if (input instanceof Request && !input.bodyUsed) {
        const to = target(routes, input.url);
        if (to !== undefined) url = rebuild(Request, input, to);
      }
      if (url !== undefined) {
        args = Array.prototype.slice.call(arguments);
        args[0] = url;
      }
    } catch {
      args = arguments; // routing failed: stock fetch, original arguments
    }
    return Reflect.apply(stock, this, args);
  };
  Object.defineProperty(wrapper, "name", { value: stock.name, configurable: true });
  Object.defineProperty(wrapper, "length", { value: stock.length, configurable: true });

  // In a module (strict mode) assigning a read-only fetch throws: caught
  // below. Check the result too, in case a setter swallowed it.
  g.fetch = wrapper;
  if (g.fetch !== wrapper) {
    say("globalThis.fetch could not be replaced; fetch left as is");
    return;
  }
  Object.defineProperty(g, installed, { value: true });
}

try {
  install(ROUTES());
} catch (err) {
  say("fetch left as is: " + describe(err));
}

// The routes, written by convex-shim below this line; function
// declarations are hoisted, so this source's prefix never changes.

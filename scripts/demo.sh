#!/usr/bin/env bash
# make demo: convex-shim in front of a stand-in Convex backend, here, with no Convex account.
#
#   1. builds the stand-in backend image (e2e/standin/build.sh, FROM scratch, real Node) and
#      the shimmed image from Dockerfile.backend, the file users build, on top of it;
#   2. shows the seed's failure on the stock image: with CONVEX_CLOUD_ORIGIN=http://127.0.0.1 a
#      Node action's ctx.runQuery fails with ECONNREFUSED 127.0.0.1:80;
#   3. runs the same Node action, and every other kind of callback, through the shim;
#   4. a public https origin, as in production (https://convex.example.test behind a TLS edge,
#      e2e/edge, whose test CA Node trusts through NODE_EXTRA_CA_CERTS), where the container
#      cannot resolve its own public name (upstream issue #386): the stock image's callbacks
#      fail with Node's getaddrinfo error; through the shim all seven kinds work and the edge
#      sees none of them;
#   5. docker stop on both while a callback is in flight: the time it took, the exit code and
#      the signals the backend saw.
#
# Needs docker, go, node and busybox-static (make deps). Removes the containers and the
# network it creates.
# Exits non-zero, after printing the container's logs, if anything is not as described.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
standin=convex-standin:test
shimmed=convex-backend-shim:test
edge_image=convex-e2e-edge:test
public=https://convex.example.test
network=
origin=http://127.0.0.1
ops=(query mutation action schedule_job storage_store storage_get storage_delete)
containers=()

cleanup() {
	if [ ${#containers[@]} -gt 0 ]; then
		docker rm -f -v "${containers[@]}" >/dev/null 2>&1 || true
	fi
	if [ -n "$network" ]; then
		docker network rm "$network" >/dev/null 2>&1 || true
	fi
	if [ -n "${ca_dir:-}" ]; then
		rm -rf "$ca_dir"
	fi
}
trap cleanup EXIT

fail() {
	echo >&2
	echo "demo: FAILED: $1" >&2
	if [ -n "${2:-}" ]; then
		echo "--- docker logs $2:" >&2
		docker logs "$2" 2>&1 | sed 's/^/    /' >&2 || true
	fi
	exit 1
}

say() { printf '%s\n' "$*"; }
bold= plain=
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

# node does the HTTP and JSON: the host's Node is needed by build.sh anyway.
# Usage: http ready HOSTPORT | http action HOSTPORT DELAY OP... | http get URL
http() {
	node - "$@" <<'EOF'
const [mode, hostport, ...rest] = process.argv.slice(2);
const base = `http://${hostport}`;
// Node 20's fetch can hang on a connection docker-proxy accepts before the container listens,
// holding no handle, so Node would exit 0 mid-await: this timer keeps it alive until exit().
setInterval(() => {}, 1000);
async function ready() {
  const deadline = Date.now() + 30000;
  for (;;) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 1000);
    try {
      const res = await fetch(`${base}/version`, { signal: ctl.signal });
      if (res.ok) return 0;
    } catch {
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() > deadline) {
      console.log(`    GET ${base}/version: no answer after 30s`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function action() {
  const [delay, ...ops] = rest;
  let res;
  try {
    res = await fetch(`${base}/test/node-action`, {
      method: "POST",
      body: JSON.stringify({ ops, delay: delay === "-" ? "" : delay }),
    });
  } catch (err) {
    console.log(`    POST ${base}/test/node-action: ${err.message}`);
    return 1;
  }
  const out = await res.json();
  for (const r of out.results || []) {
    console.log(r.ok ? `    ok      ${r.op}` : `    FAILED  ${r.op}: ${r.error}`);
  }
  return out.ok ? 0 : 3;
}
async function get() {
  try {
    const res = await fetch(hostport);
    process.stdout.write(await res.text());
    return res.ok ? 0 : 1;
  } catch (err) {
    console.log(`    GET ${hostport}: ${err.message}`);
    return 1;
  }
}
({ ready, action, get })[mode]().then((code) => process.exit(code));
EOF
}

# start NAME IMAGE: runs it detached and sets api to the host:port published for 3210.
start() {
	containers+=("$1")
	docker run -d --name "$1" -p 127.0.0.1::3210 -e CONVEX_CLOUD_ORIGIN=$origin \
		-e STANDIN_RETRY_BASE_MS=10 "$2" >/dev/null || fail "docker run $2"
	api=$(docker port "$1" 3210/tcp | head -n1)
}

ready() { http ready "$2" || fail "$1 did not answer GET /version" "$1"; }

# start_public NAME IMAGE [DOCKER-RUN-OPTION...]: like start, on $network, with the public
# origins and the edge's CA.
start_public() {
	local name=$1 image=$2
	shift 2
	containers+=("$name")
	docker run -d --name "$name" --network "$network" -p 127.0.0.1::3210 \
		-e CONVEX_CLOUD_ORIGIN=$public -e CONVEX_SITE_ORIGIN=$public/http \
		-e NODE_EXTRA_CA_CERTS=/etc/convex-e2e/ca.pem -v "$ca_dir/ca.pem:/etc/convex-e2e/ca.pem:ro" \
		-e STANDIN_RETRY_BASE_MS=10 "$@" "$image" >/dev/null || fail "docker run $image"
	api=$(docker port "$name" 3210/tcp | head -n1)
}

signals() {
	docker cp "$1:/convex/data/signals.log" - 2>/dev/null | tar -xO 2>/dev/null | paste -sd, - || true
}

millis() { echo $(($(date +%s%N) / 1000000)); }

step "1/5 Build the images (nothing is pulled)"
bash e2e/standin/build.sh "$standin" >/dev/null
say "    $standin        stand-in for ghcr.io/get-convex/convex-backend (e2e/standin)"
make -s build >/dev/null
docker build -q -f Dockerfile.backend --target prebuilt --build-arg BASE_IMAGE="$standin" \
	-t "$shimmed" . >/dev/null 2>&1 || fail "docker build -f Dockerfile.backend"
say "    $shimmed  Dockerfile.backend with BASE_IMAGE=$standin"
bash e2e/edge/build.sh "$edge_image" >/dev/null
say "    $edge_image      a TLS edge for $public (e2e/edge), as Fly's proxy or an ingress"

suffix=$$
stock=convex-demo-stock-$suffix
shim=convex-demo-shim-$suffix

step "2/5 The stock image, CONVEX_CLOUD_ORIGIN=$origin: a Node action calls ctx.runQuery"
start "$stock" "$standin"
ready "$stock" "$api"
out=$(http action "$api" - query) && rc=0 || rc=$?
echo "$out"
[ "$rc" -eq 3 ] && grep -q 'ECONNREFUSED 127.0.0.1:80' <<<"$out" ||
	fail "expected the query callback to fail with ECONNREFUSED 127.0.0.1:80 on the stock image" "$stock"
say "    -> the seed's failure: Node calls back to 127.0.0.1:80, where nothing listens."

step "3/5 The same, through convex-shim: every kind of callback"
start "$shim" "$shimmed"
shim_api=$api
ready "$shim" "$shim_api"
docker logs "$shim" 2>&1 | grep '^convex-shim:' | sed 's/^/    /'
http action "$shim_api" - "${ops[@]}" || fail "a callback failed through the shim" "$shim"

step "4/5 A public origin, $public, that the container cannot resolve (#386)"
network=convex-demo-net-$suffix
docker network create "$network" >/dev/null || fail "docker network create $network"
edge=convex-demo-edge-$suffix
containers+=("$edge")
# No network alias for the public name: inside the network it resolves nowhere, as with an
# ingress-only DNS name or a split horizon. The edge itself proxies to the shimmed backend.
docker run -d --name "$edge" --network "$network" -p 127.0.0.1::9090 \
	-e EDGE_UPSTREAM=http://backend:3210 "$edge_image" >/dev/null || fail "docker run $edge_image"
edge_admin=$(docker port "$edge" 9090/tcp | head -n1)
deadline=$(($(millis) + 30000))
until docker logs "$edge" 2>&1 | grep -q '^edge: serving '; do
	[ "$(millis)" -lt "$deadline" ] || fail "the edge did not start" "$edge"
	sleep 0.05
done
ca_dir=$(mktemp -d)
http get "http://$edge_admin/ca.pem" >"$ca_dir/ca.pem" || fail "GET the edge's CA" "$edge"
chmod 755 "$ca_dir" && chmod 644 "$ca_dir/ca.pem"
stock_public=convex-demo-stock-public-$suffix
start_public "$stock_public" "$standin"
ready "$stock_public" "$api"
say "    the stock image, CONVEX_CLOUD_ORIGIN=$public:"
out=$(http action "$api" - query) && rc=0 || rc=$?
echo "$out"
[ "$rc" -eq 3 ] && grep -Eq '(ENOTFOUND|EAI_AGAIN) convex\.example\.test' <<<"$out" ||
	fail "expected the query callback to fail with getaddrinfo ENOTFOUND convex.example.test" "$stock_public"
docker rm -f -v "$stock_public" >/dev/null
shim_public=convex-demo-shim-public-$suffix
start_public "$shim_public" "$shimmed" --network-alias backend
ready "$shim_public" "$api"
say "    through convex-shim, the same origin:"
docker logs "$shim_public" 2>&1 | grep '^convex-shim:' | sed 's/^/    /'
http action "$api" - "${ops[@]}" || fail "a callback failed through the shim with $public" "$shim_public"
seen=$(http get "http://$edge_admin/requests" | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>console.log(JSON.parse(s).length))')
say "    the edge saw $seen requests"
[ "$seen" = 0 ] || fail "the edge saw $seen requests, want 0: the callbacks left the container" "$edge"
say "    -> every callback stayed inside the container; the public name was never needed."

step "5/5 docker stop (SIGTERM, 10 s timeout) on both, a 2 s callback in flight in the shimmed one"
tmp=$(mktemp -d)
http action "$shim_api" 2s query >"$tmp/inflight" 2>&1 &
inflight=$!
deadline=$(($(millis) + 30000))
until docker logs "$shim" 2>&1 | grep -q 'callback query: sleeping 2s'; do
	[ "$(millis)" -lt "$deadline" ] || fail "the in-flight callback never reached the backend" "$shim"
	sleep 0.05
done
stop_timed() {
	local began
	began=$(millis)
	docker stop "$1" >/dev/null
	echo $(($(millis) - began))
}
stop_timed "$stock" >"$tmp/stock_ms" &
stock_stop=$!
shim_ms=$(stop_timed "$shim")
if wait "$inflight"; then inflight_result=ok; else inflight_result=FAILED; fi
inflight_out=$(cat "$tmp/inflight")
shim_code=$(docker inspect -f '{{.State.ExitCode}}' "$shim")
shim_signals=$(signals "$shim")
printf '    convex-shim: stopped in %d.%03d s, exit code %s, signals seen: %s; in-flight callback: %s\n' \
	$((shim_ms / 1000)) $((shim_ms % 1000)) "$shim_code" "${shim_signals:-nothing}" "$inflight_result"
say "    (waiting for the stock image: it ignores SIGTERM as PID 1, so docker stop waits out its timeout)"
wait "$stock_stop"
stock_ms=$(cat "$tmp/stock_ms")
rm -rf "$tmp"
stock_code=$(docker inspect -f '{{.State.ExitCode}}' "$stock")
stock_signals=$(signals "$stock")
printf '    stock image: stopped in %d.%03d s, exit code %s, signals seen: %s\n' \
	$((stock_ms / 1000)) $((stock_ms % 1000)) "$stock_code" "${stock_signals:-nothing}"

[ "$inflight_result" = ok ] || { echo "$inflight_out"; fail "the in-flight callback failed during the drain" "$shim"; }
[ "$shim_code" = 0 ] || fail "the shimmed container exited $shim_code, want 0" "$shim"
[ "$shim_signals" = "backend SIGINT" ] || fail "the backend saw '$shim_signals', want exactly one SIGINT" "$shim"
[ "$shim_ms" -lt 8000 ] || fail "docker stop took ${shim_ms} ms, want well under 10 s" "$shim"
[ "$stock_code" = 137 ] || fail "the stock container exited $stock_code, want 137 (SIGKILLed)" "$stock"

say ""
say "convex-shim: one SIGINT to the backend, the in-flight callback finished, exit 0."
say "Build it on the real image:  docker build -f Dockerfile.backend -t convex-backend-shim ."

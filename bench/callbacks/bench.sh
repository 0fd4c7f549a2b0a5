#!/bin/sh
# bench/callbacks/bench.sh: the Node callback benchmark, run by bench/bench.sh
# after the forwarder and init benchmarks. Builds bench/callbacks and the
# e2e/edge, then runs them in a private network namespace (lo only) against
# bin/convex-shim; the section goes into docs/benchmarks.md. Arguments go to
# the runner: bench/callbacks/bench.sh -quick -out '' for a quick look.
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "bench callbacks: needs root (network and mount namespaces)" >&2; exit 1; }
[ -x bin/convex-shim ] || { echo "bench callbacks: no bin/convex-shim: run make build" >&2; exit 1; }
mkdir -p bin/bench
CGO_ENABLED=0 ${GO:-go} build -trimpath -o bin/bench/ ./bench/callbacks ./e2e/edge
echo "bench callbacks: load average $(cut -d' ' -f1-3 /proc/loadavg) (figures are only worth keeping near 0)" >&2
exec unshare --net sh -c 'ip link set lo up && exec bin/bench/callbacks "$@"' callbacks "$@"

#!/bin/sh
# bench/bench.sh: what `make bench` runs after `make bench-deps build`.
# Builds the bench programs, then runs bench/runner in a private network
# namespace (lo only), which writes docs/benchmarks.md. Extra arguments go
# to the runner (bench/bench.sh -rounds 1 -d 1s -out '' for a quick look).
# Then bench/callbacks/bench.sh, the Node callback benchmark, writes its own
# section (bench/callbacks/bench.sh -quick -out '' alone for a quick look).
set -eu
cd "$(dirname "$0")/.."
: "${BENCH_START:=$(date +%s.%N)}"
export BENCH_START
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network and PID namespaces)" >&2; exit 1; }
[ -x bin/convex-shim ] || { echo "bench: no bin/convex-shim: run make build" >&2; exit 1; }
mkdir -p bin/bench
CGO_ENABLED=0 ${GO:-go} build -trimpath -o bin/bench/ ./bench/load ./bench/upstream ./bench/runner
# The start-time floor is built as make build builds the shim: static, stripped.
CGO_ENABLED=0 ${GO:-go} build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o bin/bench/ ./bench/mininit
echo "bench: load average $(cut -d' ' -f1-3 /proc/loadavg) (figures are only worth keeping near 0)" >&2
unshare --net sh -c 'ip link set lo up && exec bin/bench/runner "$@"' runner "$@"
bench/callbacks/bench.sh

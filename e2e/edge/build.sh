#!/usr/bin/env bash
# Builds the test edge image (main.go) FROM scratch: the static binary and nothing else.
#
# Usage: e2e/edge/build.sh [TAG]        (default convex-e2e-edge:test)
#
# Needs go and docker (the legacy builder is enough). Nothing is downloaded.
set -euo pipefail

tag=${1:-convex-e2e-edge:test}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ctx=$(mktemp -d "${TMPDIR:-/tmp}/convex-edge.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

env -C "$root" CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$ctx/edge" ./e2e/edge
cp "$here/Dockerfile" "$ctx/Dockerfile"
old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
out=$(docker build -q -t "$tag" "$ctx" 2>&1) || { echo "build.sh: docker build -t $tag failed: $out" >&2; exit 1; }
# A rebuild after a source change leaves the previous image untagged: remove it unless a
# container still uses it.
new=$(docker image inspect -f '{{.Id}}' "$tag")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
	docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "build.sh: built $tag"

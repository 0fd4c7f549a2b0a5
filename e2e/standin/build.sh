#!/usr/bin/env bash
# Builds the Convex backend stand-in image FROM scratch (see Dockerfile and docs/convex-facts.md §2).
#
# Usage: e2e/standin/build.sh [TAG]        (default convex-standin:test)
#
# Needs go, docker (the legacy builder is enough), /bin/busybox from Debian's busybox-static,
# /usr/bin/node, and ldd (libc-bin). It assembles a build context in a temp dir: the static
# stand-in backend, run_backend.sh, local.cjs, busybox with a few applet links, and node with
# every library `ldd /usr/bin/node` lists plus the dynamic loader. Nothing is downloaded.
# Rebuilding unchanged sources is quick: the Go build cache and Docker's layer cache both hit.
# On failure it prints every step it ran with that step's output.
set -euo pipefail

tag=${1:-convex-standin:test}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ctx=$(mktemp -d "${TMPDIR:-/tmp}/convex-standin.XXXXXX")
rootfs=$ctx/rootfs
log=$ctx/build.log

finish() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "build.sh: building $tag failed (exit $rc); steps run:" >&2
		cat "$log" >&2
	fi
	rm -rf "$ctx"
}
trap finish EXIT

# step runs a command, recording it and its output for the failure report.
step() {
	echo "+ $*" >>"$log"
	"$@" >>"$log" 2>&1
}

need() {
	if [ ! -x "$1" ]; then
		echo "+ check $1: missing ($2)" >>"$log"
		return 1
	fi
}

need /bin/busybox "apt-get install busybox-static"
need /usr/bin/node "the host's Node.js, copied into the image"
for tool in go docker ldd; do
	step command -v "$tool"
done

step mkdir -p "$rootfs/bin" "$rootfs/usr/bin" "$rootfs/etc" "$rootfs/convex/node"
step install -d -m 1777 "$rootfs/tmp"

# The backend: static, so it needs nothing from the image. Mode 744 like the real /convex files.
step env -C "$root" CGO_ENABLED=0 go build -trimpath -ldflags=-s \
	-o "$rootfs/convex/convex-local-backend" ./e2e/standin/backend
step chmod 744 "$rootfs/convex/convex-local-backend"
step install -m 744 "$here/run_backend.sh" "$rootfs/convex/run_backend.sh"
step install -m 644 "$here/node/local.cjs" "$rootfs/convex/node/local.cjs"

# busybox-static is /bin/sh for run_backend.sh and gives `docker exec` a few tools.
step cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cat cp echo env grep head id kill ls mkdir nc pidof printf ps rm sleep tail \
	test timeout true false wc wget; do
	step ln -s busybox "$rootfs/bin/$applet"
done

# node and exactly what its dynamic loader needs: every path ldd prints, plus the loader itself
# (the only line without "=>"). cp -L stores the files the symlinks point to under the names
# node asks for. Without /etc/ld.so.cache the loader searches its built-in directories, which
# include the multiarch /lib/<triplet> that ldd names.
step cp /usr/bin/node "$rootfs/usr/bin/node"
libs=$(ldd /usr/bin/node | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
echo "+ ldd /usr/bin/node: $(echo $libs)" >>"$log"
[ -n "$libs" ]
for lib in $libs; do
	step mkdir -p "$rootfs$(dirname "$lib")"
	step cp -L "$lib" "$rootfs$lib"
done
# glibc reads it to resolve names (http://localhost); "files" first so that never waits on DNS.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

step cp "$here/Dockerfile" "$ctx/Dockerfile"
old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
step docker build -t "$tag" "$ctx"
# A rebuild after a source change leaves the previous image untagged: remove it unless a
# container still uses it.
new=$(docker image inspect -f '{{.Id}}' "$tag")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
	docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "build.sh: built $tag"

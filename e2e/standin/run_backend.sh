#!/bin/sh
# Stand-in for self-hosted/docker-build/run_backend.sh (docs/convex-facts.md §2): same data and
# temp directories, same fixed flags, and the same `exec`, so the process that runs this
# script becomes the backend. No traps, like the real one. (The real one is bash and also
# picks a database; the stand-in has none.)
set -e

export DATA_DIR=/convex/data
export TMPDIR="$DATA_DIR/tmp"
mkdir -p "$TMPDIR" "$DATA_DIR/storage"

exec ./convex-local-backend "$@" \
    --port 3210 \
    --site-proxy-port 3211 \
    --convex-origin "$CONVEX_CLOUD_ORIGIN" \
    --convex-site "$CONVEX_SITE_ORIGIN"

// Package examples holds deployment files for convex-shim (docker-compose, Fly.io,
// Render, Kubernetes, Railway, Coolify) and the tests that keep them honest: the compose
// files follow Convex's own (upstream-compose.tsv, every difference explained by a
// "# shim:" comment) and are brought up for real on the stand-in Convex image; every other
// file is parsed and checked against its platform's documented shape (docs/platforms.md),
// the shim's grace against the platform's SIGKILL deadline, and the values its README states.
//
// Two of them run the STOCK backend image with no image of one's own:
// compose-stock-image/ and kubernetes/stock-image/ bring the shim in at run time
// from the shim-only image (`convex-shim --install DIR` onto a shared volume). The
// Kubernetes one cannot be deployed here, so its mechanics are run with Docker using
// the manifest's own values (stock_test.go).
package examples

// Package examples holds deployment files for convex-shim (docker-compose, Fly.io,
// Render, Kubernetes) and the tests that keep them honest: the compose files are
// brought up for real on the stand-in Convex image, and every other file is parsed
// and checked against the values its README states.
//
// Two of them run the STOCK backend image with no image of one's own:
// compose-stock-image/ and kubernetes/stock-image/ bring the shim in at run time
// from the shim-only image (`convex-shim --install DIR` onto a shared volume). The
// Kubernetes one cannot be deployed here, so its mechanics are run with Docker using
// the manifest's own values (stock_test.go).
package examples

// Package examples holds deployment files for convex-shim (docker-compose, Fly.io,
// Render, Kubernetes) and the tests that keep them honest: the compose file is
// brought up for real on the stand-in Convex image, and every other file is parsed
// and checked against the values its README states.
package examples

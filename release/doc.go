// Package release holds no code, only the tests of how convex-shim reaches users
// as a binary, both run by plain `go test ./...` (so by `make test` and CI):
//
//   - `make release` is reproducible: two builds of the same sources, one at
//     another path with an empty GOCACHE, give byte-identical binaries for
//     linux/amd64 and linux/arm64 and the same SHA256SUMS;
//   - `go install github.com/convex-shim/convex-shim/cmd/convex-shim@VERSION`
//     works from the module path in go.mod, through a file:// module proxy the
//     test writes, and the installed binary reports VERSION.
//
// They are a package of their own, not part of examples/, because they test the
// build and the module, not deployment files, and need no Docker.
package release

package dockertest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The image tags end in a digest of the checkout's path: two checkouts on one machine (a fresh
// clone running .ci/run beside a working tree) build different code and must never run each
// other's images under a shared tag.
var (
	// ShimImage is the tag BuildShimImage gives Dockerfile.backend built on the stand-in.
	ShimImage = "convex-backend-shim:" + checkoutTag()
	// ShimOnlyImage is the tag BuildShimOnlyImage gives the shim-only image (FROM scratch,
	// the binary alone at /convex-shim).
	ShimOnlyImage = "convex-shim-only:" + checkoutTag()
	// StandinImage is the tag BuildStandin gives the stand-in; STANDIN_IMAGE overrides it.
	StandinImage = func() string {
		if v := os.Getenv("STANDIN_IMAGE"); v != "" {
			return v
		}
		return "convex-standin:" + checkoutTag()
	}()
)

// checkoutTag is "test-" and 8 hex digits of the SHA-256 of RepoRoot.
func checkoutTag() string {
	sum := sha256.Sum256([]byte(RepoRoot()))
	return "test-" + hex.EncodeToString(sum[:4])
}

var (
	dockerCheck, composeCheck once
	standinBuild              once
	shimBuild, shimOnlyBuild  once

	// standinPrev is the stand-in's image ID before BuildStandin rebuilt it, if the rebuild
	// changed it. build.sh removes it, unless the previous ShimImage is still built on it;
	// BuildShimImage removes it then, once it has replaced that image.
	standinPrev string
)

// RequireDocker fails the test, with docker's own error, if the engine is not reachable.
func RequireDocker(t testing.TB) {
	t.Helper()
	dockerCheck.do(t, func() (string, error) {
		out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("the Docker engine is not reachable (the end-to-end tests need it and do not skip): docker version: %v\n%s", err, out)
		}
		return "", nil
	})
}

// RequireCompose is RequireDocker, and fails the test if docker-compose (v1, as Debian ships
// it) is missing: the tests that bring compose files up need it and do not skip.
func RequireCompose(t testing.TB) {
	t.Helper()
	RequireDocker(t)
	composeCheck.do(t, func() (string, error) {
		if out, err := exec.Command("docker-compose", "version").CombinedOutput(); err != nil {
			return "", fmt.Errorf("docker-compose (v1) is missing; the compose tests need it and do not skip (apt-get install docker-compose): %v\n%s", err, out)
		}
		return "", nil
	})
}

// BuildStandin builds the stand-in image with e2e/standin/build.sh, once per test binary, and
// returns its tag.
func BuildStandin(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	standinBuild.do(t, func() (string, error) {
		return "", withBuildLock(func() error {
			old := imageID(StandinImage)
			if err := run(RepoRoot(), "bash", "e2e/standin/build.sh", StandinImage); err != nil {
				return err
			}
			if old != "" && old != imageID(StandinImage) {
				standinPrev = old
			}
			return nil
		})
	})
	return StandinImage
}

// BuildShimImage builds the shimmed image, once per test binary, exactly as the Makefile's
// image target does but on the stand-in: `make build`, then Dockerfile.backend --target
// prebuilt with BASE_IMAGE the stand-in. It returns ShimImage.
func BuildShimImage(t testing.TB) string {
	t.Helper()
	base := BuildStandin(t)
	shimBuild.do(t, func() (note string, err error) {
		err = withHostBinary(func() error {
			note, err = buildImage(ShimImage, "--target", "prebuilt", "--build-arg", "BASE_IMAGE="+base)
			if err != nil {
				return err
			}
			note = strings.TrimSpace(note + "\n" + removeDangling(standinPrev))
			return nil
		})
		return note, err
	})
	return ShimImage
}

// BuildShimOnlyImage builds the shim-only image, once per test binary: `make build`, then
// Dockerfile.backend --target shim-prebuilt (FROM scratch, bin/convex-shim at /convex-shim,
// its ENTRYPOINT). It returns ShimOnlyImage.
func BuildShimOnlyImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	shimOnlyBuild.do(t, func() (note string, err error) {
		err = withHostBinary(func() error {
			note, err = buildImage(ShimOnlyImage, "--target", "shim-prebuilt")
			return err
		})
		return note, err
	})
	return ShimOnlyImage
}

// PrepareHostBinary readies what a build of Dockerfile.backend's prebuilt targets that the
// test runs itself (docker-compose build, say) needs from the host: the stand-in image
// (BuildStandin) and bin/convex-shim (`make build`). Then it runs build, if not nil, still
// holding the build lock, so that no other test binary's make build rewrites bin/convex-shim,
// nor its build.sh retags the stand-in, while build reads them. It fails the test if any of
// them fails. Unlike the image builds it does this at every call: build is the caller's.
func PrepareHostBinary(t testing.TB, build func() error) {
	t.Helper()
	BuildStandin(t)
	if err := withHostBinary(build); err != nil {
		t.Fatal(err)
	}
}

// withHostBinary runs `make build` and then build (if not nil), both under the build lock.
func withHostBinary(build func() error) error {
	return withBuildLock(func() error {
		if err := run(RepoRoot(), "make", "build"); err != nil {
			return err
		}
		if build == nil {
			return nil
		}
		return build()
	})
}

// buildImage builds Dockerfile.backend in the repository root as tag, with more docker build
// options. A rebuild that changed the image leaves the previous one untagged: it is removed,
// unless something still uses it; the note says why it could not be, if for another reason.
func buildImage(tag string, opts ...string) (note string, err error) {
	old := imageID(tag)
	args := append([]string{"build", "-q", "-f", "Dockerfile.backend", "-t", tag}, opts...)
	if err := run(RepoRoot(), "docker", append(args, ".")...); err != nil {
		return "", err
	}
	if old == "" || old == imageID(tag) {
		return "", nil
	}
	return removeDangling(old), nil
}

// imageID is the ID of the image ref names, or "" if there is none.
func imageID(ref string) string {
	out, err := Inspect(ref, "{{.Id}}")
	if err != nil {
		return ""
	}
	return out
}

// removeDangling removes image id if no tag names it any more (a rebuild moved its tag away),
// leaving it if a container or a child image still uses it (docker's "conflict") or it is
// gone already. It returns why it could not remove it otherwise, for the test log.
func removeDangling(id string) string {
	if id == "" {
		return ""
	}
	if tags, err := Docker("image", "inspect", "-f", "{{len .RepoTags}}", id); err != nil || strings.TrimSpace(tags) != "0" {
		return "" // gone, or tagged under another name: not a leftover of ours
	}
	out, err := Docker("rmi", id)
	if err != nil && !strings.Contains(out, "conflict") && !strings.Contains(out, "No such image") {
		return fmt.Sprintf("dockertest: remove the previous image %s: %v", id, err)
	}
	return ""
}

// withBuildLock serializes image builds, and the make build they read, across the test
// binaries `go test ./...` runs at the same time: two build.sh runs retagging the same image
// would race, and a docker build could read bin/convex-shim while make build rewrites it.
func withBuildLock(build func() error) error {
	path := filepath.Join(os.TempDir(), "convex-shim-e2e-build.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open build lock: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return build()
}

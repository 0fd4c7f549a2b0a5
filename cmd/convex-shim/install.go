package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// install copies the running binary into dir as convex-shim. It is how the
// shim-only image (FROM scratch: no shell, no cp) puts the shim on a shared
// volume for a stock backend container to run, as a Compose one-shot service
// or a Kubernetes init container. The copy is written beside the target and
// renamed over it, so a backend starting at the same moment never runs a
// half-written file.
func install(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("install: find own binary: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("install: open %s: %w", self, err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "convex-shim")
	tmp, err := os.CreateTemp(dir, ".convex-shim-*")
	if err != nil {
		return "", fmt.Errorf("install: create in %s: %w (is the volume mounted and writable?)", dir, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install: chmod %s: %w", tmp.Name(), err)
	}
	// On disk before it is visible under its name: a node that crashes
	// right after must not leave a truncated convex-shim behind.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("install: write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("install: rename to %s: %w", dst, err)
	}
	return dst, nil
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	// An old binary in place is replaced, not appended to.
	os.WriteFile(filepath.Join(dir, "convex-shim"), []byte("old"), 0o755)
	var out, errOut bytes.Buffer
	if code := run([]string{"--install", dir}, env(), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	self, _ := os.Executable()
	want, _ := os.ReadFile(self)
	got, err := os.ReadFile(filepath.Join(dir, "convex-shim"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed copy differs from the running binary (%d vs %d bytes, %v)", len(got), len(want), err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "convex-shim")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if !strings.Contains(out.String(), "installed as "+filepath.Join(dir, "convex-shim")) {
		t.Fatalf("stdout %q", out.String())
	}

	errOut.Reset()
	if code := run([]string{"--install", filepath.Join(dir, "missing")}, env(), &out, &errOut); code != exitSetup ||
		!strings.Contains(errOut.String(), "install: create in") || strings.Count(errOut.String(), "\n") != 1 {
		t.Fatalf("missing dir: exit %d, %q", code, errOut.String())
	}
}

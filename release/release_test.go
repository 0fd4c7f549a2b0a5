package release

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// modulePath is what the README tells users to go install; go.mod must agree.
const modulePath = "github.com/convex-shim/convex-shim"

// releaseBudget is how long the cold `make release` may take before the test says so in
// its log (it does not fail: CI machines vary). Measured at about 1 min on 2 cores.
const releaseBudget = 2 * time.Minute

// repoRoot is the directory above this package, holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module\s+(\S+)\s*$`).FindSubmatch(data)
	if m == nil || string(m[1]) != modulePath {
		t.Fatalf("go.mod in %s: module path %q, want %s (the path the README gives to go install)", root, m, modulePath)
	}
	return root
}

// sourceFiles reads the source tree as the go command in this checkout sees it: every
// file git tracks or would track (untracked files that no .gitignore excludes), with its
// working-tree content and mode. Reading it once, into memory, gives each test a
// snapshot: other people editing the checkout while the test runs cannot make two builds
// of "the same sources" differ.
func sourceFiles(t *testing.T, root string) map[string]srcFile {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files in %s (the test snapshots the source tree with git; it needs git and a checkout): %v", root, err)
	}
	files := map[string]srcFile{}
	for _, name := range strings.Split(string(out), "\x00") {
		if name == "" {
			continue
		}
		fi, err := os.Lstat(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // tracked but deleted in the working tree
		} else if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.ToSlash(name)] = srcFile{data, fi.Mode().Perm()}
	}
	if _, ok := files["go.mod"]; !ok {
		t.Fatal("git ls-files does not list go.mod")
	}
	return files
}

type srcFile struct {
	data []byte
	mode fs.FileMode
}

func writeTree(t *testing.T, dir string, files map[string]srcFile) {
	t.Helper()
	for name, f := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

// gitVersion is what the Makefile stamps: git describe --tags --always --dirty, else devel.
func gitVersion(root string) string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "devel"
}

// env is the environment with each KEY=VALUE of set replacing the inherited one.
func env(set ...string) []string {
	e := os.Environ()
	for _, kv := range set {
		key, _, _ := strings.Cut(kv, "=")
		e = slices.DeleteFunc(e, func(s string) bool { return strings.HasPrefix(s, key+"=") })
		e = append(e, kv)
	}
	return e
}

// makeRelease runs `make release` in src with dist and version given, and returns how
// long it took and the SHA256SUMS it wrote.
func makeRelease(t *testing.T, src, dist, version string, extraEnv ...string) (time.Duration, []byte) {
	t.Helper()
	cmd := exec.Command("make", "release", "DIST="+dist, "VERSION="+version)
	cmd.Dir = src
	// GOFLAGS from the caller's environment must not change the bytes; the Makefile
	// carries every flag a release needs.
	cmd.Env = env(append([]string{"GOFLAGS="}, extraEnv...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("make release in %s: %v\n%s", src, err, out)
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	return took, sums
}

var releaseArch = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkDist checks what `make release` wrote into dist: exactly one static binary per
// release platform, for that architecture, with version stamped, and a SHA256SUMS that
// `sha256sum -c` (the README's check) accepts and that matches the files' own hashes.
func checkDist(t *testing.T, dist, version string) {
	t.Helper()
	ents, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"SHA256SUMS", "convex-shim-linux-amd64", "convex-shim-linux-arm64"}; !slices.Equal(names, want) {
		t.Errorf("%s holds %q, want %q", dist, names, want)
	}
	sums, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	for arch, machine := range releaseArch {
		name := "convex-shim-linux-" + arch
		data, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Error(err)
			continue
		}
		sum := sha256.Sum256(data)
		if line := hex.EncodeToString(sum[:]) + "  " + name + "\n"; !bytes.Contains(sums, []byte(line)) {
			t.Errorf("SHA256SUMS lacks %q:\n%s", line, sums)
		}
		checkStatic(t, name, data, machine)
		// The shim is copied into every backend image and volume. make bench
		// reports the size too; here growth fails at once.
		if len(data) > maxBinarySize {
			t.Errorf("%s: %d bytes, over the %d-byte (3 MiB) budget for the stripped static binary", name, len(data), maxBinarySize)
		} else {
			t.Logf("%s: %d bytes, %d under the 3 MiB budget", name, len(data), maxBinarySize-len(data))
		}
		// -X main.version puts the string in the binary.
		if !bytes.Contains(data, []byte(version)) {
			t.Errorf("%s: version %q is not stamped in the binary", name, version)
		}
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = dist
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("sha256sum -c SHA256SUMS in %s: %v\n%s", dist, err, out)
	} else {
		t.Logf("sha256sum -c SHA256SUMS:\n%s", bytes.TrimSpace(out))
	}
}

// checkStatic asserts data is an ELF executable for machine with no program
// interpreter and no dynamic section: a static binary that runs in any image,
// FROM scratch included.
func checkStatic(t *testing.T, name string, data []byte, machine elf.Machine) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: not ELF: %v", name, err)
		return
	}
	defer f.Close()
	if f.Machine != machine || f.Type != elf.ET_EXEC {
		t.Errorf("%s: ELF %v %v, want %v ET_EXEC", name, f.Machine, f.Type, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: has %v: not a static binary", name, p.Type)
		}
	}
}

// TestReleaseReproducible builds the release twice from one snapshot of the sources:
// first at one path with the caller's build cache (as a developer runs `make release`),
// then from a copy at another path with an empty GOCACHE, so nothing is reused and both
// architectures are compiled cold, standard library included. The two SHA256SUMS, and
// every binary, must be byte-identical.
func TestReleaseReproducible(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	files := sourceFiles(t, root)
	version := gitVersion(root)
	tmp := t.TempDir()

	srcA := filepath.Join(tmp, "a", "convex-shim")
	srcB := filepath.Join(tmp, "elsewhere", "much", "deeper", "checkout-b")
	writeTree(t, srcA, files)
	writeTree(t, srcB, files)
	distA, distB := filepath.Join(tmp, "dist-a"), filepath.Join(tmp, "dist-b")

	tookA, sumsA := makeRelease(t, srcA, distA, version)
	t.Logf("build A: make release VERSION=%s in %s, warm GOCACHE: %v\n%s", version, srcA, tookA.Round(time.Millisecond), sumsA)

	cold := filepath.Join(tmp, "empty-gocache")
	tookB, sumsB := makeRelease(t, srcB, distB, version, "GOCACHE="+cold)
	t.Logf("build B: make release VERSION=%s in %s, empty GOCACHE (amd64 and arm64 cold): %v\n%s", version, srcB, tookB.Round(time.Millisecond), sumsB)
	if tookB > releaseBudget {
		t.Logf("NOTE: the cold build took %v, over the %v budget; consider a warm arm64 build", tookB.Round(time.Second), releaseBudget)
	}
	// The cold build really was cold: its cache was empty and is now filled.
	if ents, err := os.ReadDir(cold); err != nil || len(ents) == 0 {
		t.Errorf("GOCACHE %s was not used by build B (%v, %d entries)", cold, err, len(ents))
	}

	if !bytes.Equal(sumsA, sumsB) {
		t.Errorf("SHA256SUMS differ between the two builds of the same sources:\nA (%s):\n%s\nB (%s):\n%s", srcA, sumsA, srcB, sumsB)
	}
	for arch := range releaseArch {
		name := "convex-shim-linux-" + arch
		a, errA := os.ReadFile(filepath.Join(distA, name))
		b, errB := os.ReadFile(filepath.Join(distB, name))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between the builds (%d vs %d bytes; %v, %v)", name, len(a), len(b), errA, errB)
		}
	}
	checkDist(t, distA, version)
	checkDist(t, distB, version)

	// The binary for this machine runs and reports the stamped version.
	if _, ok := releaseArch[runtime.GOARCH]; ok {
		out, err := exec.Command(filepath.Join(distB, "convex-shim-linux-"+runtime.GOARCH), "--version").CombinedOutput()
		if got, want := strings.TrimSpace(string(out)), "convex-shim "+version; err != nil || got != want {
			t.Errorf("convex-shim-linux-%s --version: %q (%v), want %q", runtime.GOARCH, got, err, want)
		} else {
			t.Logf("convex-shim-linux-%s --version: %s", runtime.GOARCH, got)
		}
	}
}

// maxBinarySize is 3 MiB, the budget for a release binary as make release strips it. The
// shim is copied into every backend image and shared volume, and it uses the standard
// library wherever it fits (flag, log, text/tabwriter): the budget leaves room for that and
// for growth, so it is a guard against accidental growth (a dependency that drags in
// net/http, say), not a reason to hand-write what the library does.
const maxBinarySize = 3 * 1024 * 1024

// testVersion is the version the module proxy below serves.
const testVersion = "v0.0.1-test"

// writeModuleProxy lays out a GOPROXY directory (the go command's file:// protocol)
// serving modulePath at testVersion: list, .info, .mod and a module zip whose every
// entry is prefixed modulePath@testVersion/. archive/zip is enough; the go command
// checks the zip's paths and hashes it when it extracts it.
func writeModuleProxy(t *testing.T, dir string, files map[string]srcFile) {
	t.Helper()
	at := filepath.Join(dir, filepath.FromSlash(modulePath), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		w, err := zw.Create(modulePath + "@" + testVersion + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[name].data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	info := fmt.Sprintf(`{"Version":%q,"Time":%q}`+"\n", testVersion, time.Now().UTC().Format(time.RFC3339))
	for name, data := range map[string][]byte{
		"list":                []byte(testVersion + "\n"),
		testVersion + ".info": []byte(info),
		testVersion + ".mod":  files["go.mod"].data,
		testVersion + ".zip":  buf.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(at, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("module proxy: %d files in %s@%s (%d bytes zipped)", len(names), modulePath, testVersion, buf.Len())
}

// TestGoInstall runs the README's `go install <module>/cmd/convex-shim@<version>` as a
// user would, without publishing anything: the module comes from a file:// proxy this
// test writes from the source tree, its dependencies (golang.org/x/sys) from the local
// module cache's download directory or proxy.golang.org, into an empty GOMODCACHE, so
// the module really is fetched, extracted and built from the zip. Only the checksum
// database is told to skip this module (GONOSUMDB): it was never published. The
// installed binary must report the version from its build info, since go install sets
// no -X flag.
func TestGoInstall(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	files := sourceFiles(t, root)
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	writeModuleProxy(t, proxy, files)

	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	localDownloads := filepath.Join(strings.TrimSpace(string(out)), "cache", "download")
	gobin := filepath.Join(tmp, "bin")
	work := filepath.Join(tmp, "elsewhere") // outside any module: no go.mod, no go.work
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}

	pkg := modulePath + "/cmd/convex-shim@" + testVersion
	cmd := exec.Command("go", "install", pkg)
	cmd.Dir = work
	cmd.Env = env(
		"GOPROXY=file://"+proxy+",file://"+localDownloads+",https://proxy.golang.org",
		"GONOSUMDB="+modulePath,
		"GOPRIVATE=", "GONOPROXY=", // nothing may bypass the proxy list above
		"GOMODCACHE="+filepath.Join(tmp, "modcache"),
		"GOFLAGS=-modcacherw", // so t.TempDir can remove the module cache
		"GOWORK=off",
		"GOBIN="+gobin,
		"CGO_ENABLED=0", // as the README says: a static binary for any image
	)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go install %s: %v\n%s", pkg, err, out)
	} else {
		t.Logf("CGO_ENABLED=0 go install %s: %v\n%s", pkg, time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
	}

	bin := filepath.Join(gobin, "convex-shim")
	out, err = exec.Command(bin, "--version").CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "convex-shim "+testVersion; err != nil || got != want {
		t.Errorf("$GOBIN/convex-shim --version: %q (%v), want %q", got, err, want)
	} else {
		t.Logf("$GOBIN/convex-shim --version: %s", got)
	}
	out, err = exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^\s*mod\s+`+regexp.QuoteMeta(modulePath)+`\s+`+regexp.QuoteMeta(testVersion)+`\s+h1:`).Match(out) {
		t.Errorf("go version -m: want mod %s %s h1:...; got (%v):\n%s", modulePath, testVersion, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := releaseArch[runtime.GOARCH]; ok {
		checkStatic(t, "$GOBIN/convex-shim", data, m)
	}
}

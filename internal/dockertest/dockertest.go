// Package dockertest holds the Docker helpers shared by the tests that run containers:
// e2e/standin (the stand-in Convex backend image), e2e/image (Dockerfile.backend built on it),
// e2e/public (both behind a test edge, e2e/edge, on a public https origin) and examples/ (the
// compose files brought up with docker-compose, the stock-image mechanics).
// It builds the images once per test binary, and every build of an image or of
// bin/convex-shim under one lock shared by all test binaries; it creates user-defined networks
// and runs the edge on them (edge.go); it runs containers that are
// removed when the test ends, finds their published ports, waits for them on a condition
// (GET /version, Docker's health status, a log line, their exit), reads files and the
// stand-in's signal log out of them, and runs Node actions in them; and it runs docker-compose
// projects that are taken down when the test ends.
//
// Docker is required. When the engine cannot be reached every test that needs it fails with
// the docker error; nothing is skipped.
//
// Only the classic builder is assumed, and nothing is pulled: the stand-in is built FROM
// scratch by e2e/standin/build.sh, and the shimmed images from the repository's own
// Dockerfile.backend (targets prebuilt, BASE_IMAGE the stand-in, and shim-prebuilt), the same
// file users build.
package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// SignalLogPath is where the stand-in backend and its Node server record the signals they get.
const SignalLogPath = "/convex/data/signals.log"

// Deadline bounds every wait in this package: a container start, a log line, an exit.
const Deadline = 30 * time.Second

// once runs a check or a build once per test binary and hands every caller its outcome.
type once struct {
	sync.Once
	err  error
	note string // logged by each caller: something that went wrong but fails nothing
}

func (o *once) do(t testing.TB, f func() (note string, err error)) {
	t.Helper()
	o.Do(func() { o.note, o.err = f() })
	if o.note != "" {
		t.Log(o.note)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
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

func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return nil
}

var (
	rootOnce sync.Once
	root     string
)

// RepoRoot is the directory holding the module's go.mod, found upward from the test's working
// directory (its package directory). It panics if there is none: the tests cannot run then.
func RepoRoot() string {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			panic(err)
		}
		for {
			if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
				bytes.Contains(data, []byte("module github.com/convex-shim/convex-shim\n")) {
				root = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				panic("dockertest: no go.mod of github.com/convex-shim/convex-shim above the working directory")
			}
			dir = parent
		}
	})
	return root
}

// Docker runs the docker CLI and returns its combined output; the error quotes the command and
// that output.
func Docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Inspect is `docker inspect -f format name` (a container, an image, a volume), its output
// trimmed.
func Inspect(name, format string) (string, error) {
	out, err := Docker("inspect", "-f", format, name)
	return strings.TrimSpace(out), err
}

// FreePort is a loopback port free at the time of the call, for a host port that must be a
// real number rather than Docker's ephemeral 0 (compose files that also put it in a URL).
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// RandomName is prefix plus 8 random hex digits, for containers, volumes and compose projects.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Container is a container started by Start (or adopted by Track) and removed, with its
// anonymous volumes, when the test ends. The methods work on any container: one that
// docker-compose started is &Container{Name: its ID, API: its published 3210}.
type Container struct {
	Name string
	API  string // host:port published for 3210; empty if not published or already exited
	Site string // host:port published for 3211; empty if not published or already exited
}

// Options for Start.
type Options struct {
	Env    []string // KEY=VALUE, each passed with -e
	Docker []string // more docker run options (--init, --read-only, --user ...)
	Args   []string // after the image: given to the ENTRYPOINT (run_backend.sh's "$@")
	// NoPublish leaves 3210 and 3211 unpublished (for containers that exit at once).
	NoPublish bool
}

// Start runs image detached with a random name, publishing 3210 and 3211 on random loopback
// ports of the host, and registers its removal (docker rm -f -v) when the test ends; if the
// test failed its logs are printed first.
func Start(t testing.TB, image string, o Options) *Container {
	t.Helper()
	RequireDocker(t)
	c := &Container{Name: RandomName("convex-e2e-")}
	args := []string{"run", "-d", "--name", c.Name}
	if !o.NoPublish {
		args = append(args, "-p", "127.0.0.1::3210", "-p", "127.0.0.1::3211")
	}
	for _, e := range o.Env {
		args = append(args, "-e", e)
	}
	args = append(args, o.Docker...)
	args = append(args, image)
	args = append(args, o.Args...)
	Track(t, c.Name)
	// Docker picks the host port from the ephemeral range without asking the kernel, so on a
	// machine where other tests hold thousands of loopback connections its pick is sometimes
	// taken ("Error starting userland proxy: listen tcp4 127.0.0.1:32836: bind: address
	// already in use"). The container is then created but not started: remove it and run it
	// again; the allocator moves on to the next port.
	for try := 1; ; try++ {
		out, err := Docker(args...)
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(out, "userland proxy") || !strings.Contains(out, "address already in use") {
			t.Fatal(err)
		}
		t.Logf("docker run %s, try %d: a published port was taken on the host; again", c.Name, try)
		if _, err := Docker("rm", "-f", "-v", c.Name); err != nil {
			t.Fatal(err)
		}
	}
	if !o.NoPublish {
		// Docker forgets the published ports of an exited container; a container that
		// exited at once is waited for, never called.
		c.API, _ = PublishedPort(c.Name, "3210/tcp")
		c.Site, _ = PublishedPort(c.Name, "3211/tcp")
	}
	return c
}

// Track registers the cleanup Start does for a container named name that the test runs itself
// (docker run -it under a pty, say): logs on failure, then docker rm -f -v.
func Track(t testing.TB, name string) *Container {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			if logs, err := Docker("logs", name); err == nil || logs != "" {
				t.Logf("docker logs %s:\n%s", name, logs)
			}
		}
		if out, err := Docker("rm", "-f", "-v", name); err != nil && !strings.Contains(out, "No such container") {
			t.Log(err)
		}
	})
	return &Container{Name: name}
}

// Volume creates a named volume removed when the test ends (after the containers using it,
// since cleanups run last-registered first).
func Volume(t testing.TB) string {
	t.Helper()
	return create(t, "volume", "convex-e2e-vol-")
}

// create creates a Docker object of kind (volume, network) under a random name with prefix,
// and removes it when the test ends.
func create(t testing.TB, kind, prefix string) string {
	t.Helper()
	RequireDocker(t)
	name := RandomName(prefix)
	if _, err := Docker(kind, "create", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := Docker(kind, "rm", name); err != nil {
			t.Log(err)
		}
	})
	return name
}

// PublishedPort is the host address Docker published port ("3210/tcp") on.
func PublishedPort(name, port string) (string, error) {
	out, err := Docker("port", name, port)
	if err != nil {
		return "", err
	}
	// One line per host address; -p 127.0.0.1:: gives exactly one.
	return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]), nil
}

// State is the container's .State.Status (running, exited, ...).
func (c *Container) State(t testing.TB) string {
	t.Helper()
	out, err := Inspect(c.Name, "{{.State.Status}}")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// WaitReady polls GET /version on the published API port until it answers 200, failing at
// once if the container has exited and after Deadline otherwise.
func (c *Container) WaitReady(t testing.TB) {
	t.Helper()
	if c.API == "" {
		t.Fatalf("container %s: 3210 is not published (exited at once? state %s)", c.Name, c.State(t))
	}
	deadline := time.Now().Add(Deadline)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + c.API + "/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if state := c.State(t); state != "running" {
			t.Fatalf("container %s is %s before GET /version answered (last error: %v)", c.Name, state, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/version: not ready after %s: %v", c.API, Deadline, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// WaitHealthy polls Docker's health status until it is healthy, failing at once when the
// container stops running or turns unhealthy, and after within otherwise. It returns the
// final "running healthy".
func (c *Container) WaitHealthy(t testing.TB, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := Inspect(c.Name, "{{.State.Status}} {{.State.Health.Status}}")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case out == "running healthy":
			return out
		case !strings.HasPrefix(out, "running"), strings.HasSuffix(out, "unhealthy"):
			last, _ := Inspect(c.Name, "{{json .State.Health}}")
			t.Fatalf("container %s is %q, want running and healthy; health: %s", c.Name, out, last)
		case time.Now().After(deadline):
			last, _ := Inspect(c.Name, "{{json .State.Health}}")
			t.Fatalf("container %s still %q after %v; health: %s", c.Name, out, within, last)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}

// WaitLog follows the container's output (stdout and stderr) until a line contains substr,
// failing if the container ends first or after Deadline.
func (c *Container) WaitLog(t testing.TB, substr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "logs", "-f", c.Name)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	found := false
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			found = true
			break
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	err := <-done
	if !found {
		if ctx.Err() == context.DeadlineExceeded {
			t.Fatalf("container %s: no %q in its output after %s", c.Name, substr, Deadline)
		}
		t.Fatalf("container %s ended (docker logs -f: %v) without %q in its output", c.Name, err, substr)
	}
}

// Logs is the container's output so far, stdout and stderr interleaved.
func (c *Container) Logs(t testing.TB) string {
	t.Helper()
	out, err := Docker("logs", c.Name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// StopTimeline is a stop as the container recorded it: when the shim logged the stop request
// it received, when (if ever) it logged SIGKILLing the backend's process group (the grace ran
// out, or a third stop request; not the cleanup of leftovers), and when the container's process
// exited (Docker's State.FinishedAt). Timing assertions use it, not how long the docker CLI
// took: while other work loads the machine the daemon has been seen to deliver `docker stop`'s
// SIGTERM 25 s after the call, which says nothing about the shim.
type StopTimeline struct {
	Received, Killed, Finished time.Time // Killed is zero if no SIGKILL was sent
}

// Took is the stop as the shim ran it: stop request received to the container's exit.
func (s StopTimeline) Took() time.Duration { return s.Finished.Sub(s.Received) }

// StopTimeline reads the container's timeline of its first stop request from Docker's log
// timestamps and its exit time. The container must have exited.
func (c *Container) StopTimeline(t testing.TB) StopTimeline {
	t.Helper()
	out, err := Docker("logs", "--timestamps", c.Name)
	if err != nil {
		t.Fatal(err)
	}
	var s StopTimeline
	for _, line := range strings.Split(out, "\n") {
		stamp, text, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || !strings.HasPrefix(text, "convex-shim: ") {
			continue
		}
		switch {
		case s.Received.IsZero() && strings.HasPrefix(text, "convex-shim: received ") && strings.Contains(text, "(stop request 1)"):
			s.Received = at
		case s.Killed.IsZero() && strings.Contains(text, "sending SIGKILL to") && strings.Contains(text, "process group"):
			s.Killed = at
		}
	}
	finished, err := Inspect(c.Name, "{{.State.FinishedAt}}")
	if err != nil {
		t.Fatal(err)
	}
	if s.Finished, err = time.Parse(time.RFC3339Nano, finished); err != nil || s.Finished.Year() < 2000 {
		t.Fatalf("container %s: State.FinishedAt %q: not exited", c.Name, finished)
	}
	if s.Received.IsZero() {
		t.Fatalf("container %s: no \"convex-shim: received ... (stop request 1)\" line in its log:\n%s", c.Name, out)
	}
	return s
}

// Wait blocks until the container exits (at most Deadline) and returns its exit code.
func (c *Container) Wait(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "wait", c.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("docker wait %s: %v: %s", c.Name, err, out)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("docker wait %s: parse %q: %v", c.Name, out, err)
	}
	return code
}

// Kill sends sig (TERM, INT, ...) to the container's PID 1 with docker kill.
func (c *Container) Kill(t testing.TB, sig string) {
	t.Helper()
	if _, err := Docker("kill", "-s", sig, c.Name); err != nil {
		t.Fatal(err)
	}
}

// Exec runs a command in the container with docker exec and returns its output.
func (c *Container) Exec(t testing.TB, cmd ...string) string {
	t.Helper()
	out, err := Docker(append([]string{"exec", c.Name}, cmd...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ReadFile reads one file out of the container, running or not, with docker cp (which sees
// its volumes too), and returns the file's tar header and content.
func (c *Container) ReadFile(t testing.TB, path string) (*tar.Header, []byte) {
	t.Helper()
	hdr, data, err := c.copyOut(path)
	if err != nil {
		t.Fatal(err)
	}
	return hdr, data
}

// copyOut is ReadFile's docker cp; the error wraps fs.ErrNotExist if there is no such file.
func (c *Container) copyOut(path string) (*tar.Header, []byte, error) {
	cmd := exec.Command("docker", "cp", c.Name+":"+path, "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "Could not find the file") {
			err = fs.ErrNotExist
		}
		return nil, nil, fmt.Errorf("docker cp %s:%s: %w: %s", c.Name, path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	tr := tar.NewReader(bytes.NewReader(out))
	hdr, err := tr.Next()
	if err != nil {
		return nil, nil, fmt.Errorf("docker cp %s:%s: read the tar stream: %w", c.Name, path, err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, nil, fmt.Errorf("docker cp %s:%s: read the tar stream: %w", c.Name, path, err)
	}
	return hdr, data, nil
}

// SignalLog returns the lines of the stand-in's signal log ("backend SIGINT", "node SIGTERM"),
// read with docker cp so that it works after the container has exited too; nil if no signal
// was ever recorded (the file does not exist).
func (c *Container) SignalLog(t testing.TB) []string {
	t.Helper()
	_, data, err := c.copyOut(SignalLogPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// NodeResult is the stand-in's reply to POST /test/node-action.
type NodeResult struct {
	OK      bool `json:"ok"`
	Results []struct {
		Op    string          `json:"op"`
		OK    bool            `json:"ok"`
		Value json.RawMessage `json:"value"`
		Error string          `json:"error"`
		Ms    float64         `json:"ms"` // how long the op took, timed by the Node server
	} `json:"results"`
}

// Errors lists "op: error" for each failed op.
func (r NodeResult) Errors() []string {
	var errs []string
	for _, res := range r.Results {
		if !res.OK {
			errs = append(errs, res.Op+": "+res.Error)
		}
	}
	return errs
}

// NodeAction runs a Node action in the stand-in that makes the callbacks in ops, each held
// for delay by the backend (Go duration; empty for none).
func (c *Container) NodeAction(delay string, ops ...string) (NodeResult, error) {
	var res NodeResult
	body, _ := json.Marshal(map[string]any{"ops": ops, "delay": delay})
	resp, err := http.Post("http://"+c.API+"/test/node-action", "application/json", bytes.NewReader(body))
	if err != nil {
		return res, fmt.Errorf("post node-action %v: %w", ops, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, fmt.Errorf("read node-action %v reply: %w", ops, err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("node-action %v: HTTP %d: %s", ops, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("decode node-action %v reply %q: %w", ops, raw, err)
	}
	return res, nil
}

// NodeActionOK is NodeAction, with an error also when the action reports a failed callback.
func (c *Container) NodeActionOK(delay string, ops ...string) (NodeResult, error) {
	res, err := c.NodeAction(delay, ops...)
	if err == nil && !res.OK {
		err = fmt.Errorf("node action %v (held %q) failed: %q", ops, delay, res.Errors())
	}
	return res, err
}

// Post sends an empty POST to path on the API port and fails unless it answers want; it
// returns the body.
func (c *Container) Post(t testing.TB, path string, want int) string {
	t.Helper()
	url := "http://" + c.API + path
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", url, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("POST %s: HTTP %d %q, want %d", url, resp.StatusCode, body, want)
	}
	return string(body)
}

// Get fetches url and returns its body and response (body already read and closed).
func Get(t testing.TB, url string) (string, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return string(body), resp
}

// Eventually calls cond every interval until it returns true, failing with what (and cond's
// last message) after timeout. It returns how long it took.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		ok, msg := cond()
		if ok {
			return time.Since(began)
		}
		if time.Since(began) > timeout {
			t.Fatalf("%s: not true after %s; last: %s", what, timeout, msg)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// ExitCode is the exit code behind the error exec.Cmd.Wait returned: 0 for nil, the
// command's own code for an *exec.ExitError, -1 for anything else (killed, never started).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Process is one line of busybox `ps -o pid,ppid,stat,comm` in a container.
type Process struct {
	PID, PPID int
	Stat      string // R, S, Z ...
	Comm      string
}

// Processes lists the container's processes with docker exec ps (busybox). The ps itself is
// left out.
func (c *Container) Processes(t testing.TB) []Process {
	t.Helper()
	out := c.Exec(t, "ps", "-o", "pid,ppid,stat,comm")
	var ps []Process
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		var p Process
		var err1, err2 error
		p.PID, err1 = strconv.Atoi(f[0])
		p.PPID, err2 = strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			t.Fatalf("ps in %s: cannot parse line %q of:\n%s", c.Name, line, out)
		}
		p.Stat = f[2]
		if len(f) > 3 {
			p.Comm = f[3]
		}
		if p.Comm == "ps" && p.PPID == 0 {
			continue
		}
		ps = append(ps, p)
	}
	return ps
}

// Zombies is the subset of ps whose state is Z.
func Zombies(ps []Process) []Process {
	var z []Process
	for _, p := range ps {
		if strings.HasPrefix(p.Stat, "Z") {
			z = append(z, p)
		}
	}
	return z
}

// Orphans asks the stand-in backend to leave n orphans that each live for life
// (POST /test/orphans) and returns their pids.
func (c *Container) Orphans(t testing.TB, n int, life time.Duration) []int {
	t.Helper()
	body := c.Post(t, fmt.Sprintf("/test/orphans?n=%d&life=%s", n, life), http.StatusOK)
	var reply struct{ PIDs []int }
	if err := json.Unmarshal([]byte(body), &reply); err != nil || len(reply.PIDs) != n {
		t.Fatalf("POST /test/orphans?n=%d: reply %q (%v), want %d pids", n, body, err, n)
	}
	return reply.PIDs
}

// Compose runs docker-compose (v1, as Debian ships it) on one compose file under a project of
// its own, with Env added to the environment (the values of the file's ${VAR}s).
type Compose struct {
	t       testing.TB
	File    string // relative to the test's working directory, its package directory
	Project string
	Env     []string // KEY=VALUE
}

// NewCompose returns a Compose for file under a random project name (prefix plus 8 hex
// digits) and registers its end with the test's: the logs of logServices (every service if
// none) if the test failed, then `down -v --rmi local --remove-orphans`, which also removes
// the project's volumes and the images built for it.
func NewCompose(t testing.TB, file, prefix string, env []string, logServices ...string) *Compose {
	t.Helper()
	RequireCompose(t)
	c := &Compose{t: t, File: file, Project: RandomName(prefix), Env: env}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := c.Run(time.Minute, append([]string{"logs", "--no-color"}, logServices...)...)
			t.Logf("docker-compose logs %s:\n%s", strings.Join(logServices, " "), logs)
		}
		if out, err := c.Run(2*time.Minute, "down", "-v", "--rmi", "local", "--remove-orphans"); err != nil {
			t.Errorf("cleanup: %v\n%s", err, out)
		}
	})
	return c
}

// Run runs docker-compose with args, killing it after timeout, and returns its combined
// output; the error quotes the command and that output.
func (c *Compose) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-f", c.File, "-p", c.Project}, args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Must is Run with a 5-minute timeout that fails the test on error; it returns the output
// trimmed.
func (c *Compose) Must(args ...string) string {
	c.t.Helper()
	out, err := c.Run(5*time.Minute, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// BuildWithHostBinary runs `docker-compose build services` through PrepareHostBinary: with
// the stand-in and bin/convex-shim ready, under the build lock.
func (c *Compose) BuildWithHostBinary(services ...string) {
	c.t.Helper()
	PrepareHostBinary(c.t, func() error {
		_, err := c.Run(5*time.Minute, append([]string{"build"}, services...)...)
		return err
	})
}

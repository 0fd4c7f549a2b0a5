// Package dockertest holds the Docker helpers shared by the end-to-end tests in e2e/standin
// (the stand-in Convex backend image) and e2e/image (Dockerfile.backend built on it): build
// the images once per test binary, run a container that is removed when the test ends, find
// its published ports, wait for it on a condition (GET /version, a log line, its exit), read
// the stand-in's signal log, and run Node actions in it.
//
// Docker is required. When the engine cannot be reached every test that needs it fails with
// the docker error; nothing is skipped.
//
// Only the classic builder is assumed, and nothing is pulled: the stand-in is built FROM
// scratch by e2e/standin/build.sh, and the shimmed image from the repository's own
// Dockerfile.backend (target prebuilt, BASE_IMAGE the stand-in), the same file users build.
package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// ShimImage is the tag BuildShimImage gives Dockerfile.backend built on the stand-in.
const ShimImage = "convex-backend-shim:test"

// StandinImage is the tag BuildStandin gives the stand-in; STANDIN_IMAGE overrides it.
var StandinImage = func() string {
	if v := os.Getenv("STANDIN_IMAGE"); v != "" {
		return v
	}
	return "convex-standin:test"
}()

// SignalLogPath is where the stand-in backend and its Node server record the signals they get.
const SignalLogPath = "/convex/data/signals.log"

// Deadline bounds every wait in this package: a container start, a log line, an exit.
const Deadline = 30 * time.Second

var (
	dockerOnce sync.Once
	dockerErr  error

	standinOnce sync.Once
	standinErr  error

	shimOnce sync.Once
	shimErr  error
)

// RequireDocker fails the test, with docker's own error, if the engine is not reachable.
func RequireDocker(t testing.TB) {
	t.Helper()
	dockerOnce.Do(func() {
		out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
		if err != nil {
			dockerErr = fmt.Errorf("the Docker engine is not reachable (the end-to-end tests need it and do not skip): docker version: %v\n%s", err, out)
		}
	})
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
}

// BuildStandin builds the stand-in image with e2e/standin/build.sh, once per test binary, and
// returns its tag.
func BuildStandin(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	standinOnce.Do(func() {
		standinErr = withBuildLock(func() error {
			return run(RepoRoot(), "bash", "e2e/standin/build.sh", StandinImage)
		})
	})
	if standinErr != nil {
		t.Fatal(standinErr)
	}
	return StandinImage
}

// BuildShimImage builds the shimmed image, once per test binary, exactly as the Makefile's
// image target does but on the stand-in: `make build`, then Dockerfile.backend --target
// prebuilt with BASE_IMAGE the stand-in. It returns ShimImage.
func BuildShimImage(t testing.TB) string {
	t.Helper()
	base := BuildStandin(t)
	shimOnce.Do(func() {
		root := RepoRoot()
		shimErr = withBuildLock(func() error {
			if err := run(root, "make", "build"); err != nil {
				return err
			}
			return run(root, "docker", "build", "-q", "-f", "Dockerfile.backend", "--target", "prebuilt",
				"--build-arg", "BASE_IMAGE="+base, "-t", ShimImage, ".")
		})
	})
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	return ShimImage
}

// withBuildLock serializes image builds across the test binaries `go test ./e2e/...` runs at
// the same time: two build.sh runs retagging the same image would race.
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

// RandomName is prefix plus 8 random hex digits, for containers and volumes.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Container is a container started by Start (or adopted by Track) and removed, with its
// anonymous volumes, when the test ends.
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
	if _, err := Docker(args...); err != nil {
		t.Fatal(err)
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
	RequireDocker(t)
	name := RandomName("convex-e2e-vol-")
	if _, err := Docker("volume", "create", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := Docker("volume", "rm", "-f", name); err != nil {
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
	out, err := Docker("inspect", "-f", "{{.State.Status}}", c.Name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
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

// SignalLog returns the lines of the stand-in's signal log ("backend SIGINT", "node SIGTERM"),
// read with docker cp so that it works after the container has exited too; nil if no signal
// was ever recorded (the file does not exist).
func (c *Container) SignalLog(t testing.TB) []string {
	t.Helper()
	cmd := exec.Command("docker", "cp", c.Name+":"+SignalLogPath, "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "Could not find the file") {
			return nil
		}
		t.Fatalf("docker cp %s:%s: %v: %s", c.Name, SignalLogPath, err, stderr.Bytes())
	}
	tr := tar.NewReader(bytes.NewReader(out))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("read signals.log from docker cp: %v", err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatalf("read signals.log from docker cp: %v", err)
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

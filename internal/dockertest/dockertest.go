// Package dockertest holds the Docker helpers shared by the tests that run containers:
// e2e/standin (the stand-in Convex backend image), e2e/image (Dockerfile.backend built on it),
// e2e/public (both behind a test edge, e2e/edge, on a public https origin) and examples/ (the
// compose files brought up with docker-compose, the stock-image mechanics). One file per job:
//
//   - images.go builds the images once per test binary, and every build of an image or of
//     bin/convex-shim under one lock shared by all test binaries;
//   - container.go runs containers that are removed when the test ends, finds their published
//     ports, waits for them on a condition (GET /version, Docker's health status, a log line,
//     their exit), reads their stop timeline, files and processes;
//   - standin.go speaks the stand-in's test routes: Node actions, its signal log, orphans;
//   - edge.go creates user-defined networks and runs the TLS edge on them;
//   - compose.go runs docker-compose projects that are taken down when the test ends;
//   - this file, what they share: the docker CLI, the repository root, waiting.
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
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
)

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

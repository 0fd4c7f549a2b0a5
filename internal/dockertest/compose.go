package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

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

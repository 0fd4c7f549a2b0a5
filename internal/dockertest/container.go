package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

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

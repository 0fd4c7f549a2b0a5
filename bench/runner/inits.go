package main

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initProg is one init under test, run as PID 1 of a fresh PID namespace
// as it would be in a container.
type initProg struct {
	name string
	path string
	args []string // before the child's argv
}

func initProgs() []initProg {
	ps := []initProg{
		{"tini", "/usr/bin/tini", []string{"--"}},
		{"tini-static", "/usr/bin/tini-static", []string{"--"}},
		{"dumb-init", "/usr/bin/dumb-init", []string{"--"}},
		{"catatonit", "/usr/bin/catatonit", []string{"--"}},
		// As shipped: binds the default forward 127.0.0.1:80 before the child.
		{"convex-shim", cfg.shim, []string{"--"}},
		{"convex-shim --forward off", cfg.shim, []string{"--forward", "off", "--"}},
	}
	// Candidate builds to compare, NAME=PATH each; they run with the
	// shipped defaults, like convex-shim.
	for _, kv := range strings.Split(cfg.extraInits, ",") {
		if name, path, ok := strings.Cut(kv, "="); ok {
			ps = append(ps, initProg{name, path, []string{"--"}})
		}
	}
	return ps
}

func (p initProg) argv(child ...string) []string {
	return append(append([]string{p.path}, p.args...), child...)
}

// newPIDNS makes the started process PID 1 of a new PID namespace.
var newPIDNS = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}

type initResults struct {
	progs []initProg
	start map[string][]float64 // ms, the median of each round
	rss   map[string][]mem
	sig   map[string][]float64 // µs, the median of each round
	sigs  map[string]string    // the signal the child saw
	reap  map[string][]reapResult
	bare  []float64 // /bin/true alone as PID 1, ms per round
	minGo []float64 // bench/mininit -- /bin/true as PID 1, ms per round
}

type reapResult struct {
	total, tail time.Duration // start to all reaped; last fork to all reaped
	backlog     int           // unreaped orphans when the last fork was done
	cpu         float64       // the init's CPU seconds
}

func runInits() (*initResults, error) {
	res := &initResults{
		progs: initProgs(),
		start: map[string][]float64{}, rss: map[string][]mem{}, sig: map[string][]float64{},
		sigs: map[string]string{}, reap: map[string][]reapResult{},
	}
	for _, p := range res.progs {
		if _, err := os.Stat(p.path); err != nil {
			return nil, fmt.Errorf("%s: %w (make bench-deps installs it)", p.name, err)
		}
	}
	for round := range cfg.rounds {
		order := rotateProgs(res.progs, round)

		// Start to child: INIT -- /bin/true, end to end, interleaved.
		waitQuiet()
		times := map[string][]float64{}
		for range cfg.startRuns {
			d, err := again(func() (float64, error) { return timeRun([]string{"/bin/true"}) })
			if err != nil {
				return nil, err
			}
			times[""] = append(times[""], d)
			d, err = again(func() (float64, error) { return timeRun([]string{cfg.mininit, "--", "/bin/true"}) })
			if err != nil {
				return nil, fmt.Errorf("mininit -- /bin/true: %w", err)
			}
			times["mininit"] = append(times["mininit"], d)
			for _, p := range order {
				d, err := again(func() (float64, error) { return timeRun(p.argv("/bin/true")) })
				if err != nil {
					return nil, fmt.Errorf("%s -- /bin/true: %w", p.name, err)
				}
				times[p.name] = append(times[p.name], d)
			}
		}
		res.bare = append(res.bare, median(times[""]))
		res.minGo = append(res.minGo, median(times["mininit"]))
		for _, p := range order {
			res.start[p.name] = append(res.start[p.name], median(times[p.name]))
		}
		progress("round %d  start to child exit (median of %d): /bin/true alone %.2f ms; minimal Go init %.2f ms; %s", round+1, cfg.startRuns, median(times[""]), median(times["mininit"]), perProg(order, times, "%.2f ms"))

		// Idle memory with a sleeping child.
		for _, p := range order {
			m, err := again(func() (mem, error) { return idleMem(p) })
			if err != nil {
				return nil, fmt.Errorf("%s idle memory: %w", p.name, err)
			}
			res.rss[p.name] = append(res.rss[p.name], m)
		}

		// SIGTERM to the child's stop signal, interleaved.
		waitQuiet()
		lats := map[string][]float64{}
		for range cfg.sigRuns {
			for _, p := range order {
				var name string
				us, err := again(func() (float64, error) {
					us, n, err := sigLatency(p)
					name = n
					return us, err
				})
				if err != nil {
					return nil, fmt.Errorf("%s SIGTERM: %w", p.name, err)
				}
				lats[p.name] = append(lats[p.name], us)
				res.sigs[p.name] = name
			}
		}
		for _, p := range order {
			res.sig[p.name] = append(res.sig[p.name], median(lats[p.name]))
		}
		progress("round %d  SIGTERM to the child's signal (median of %d): %s", round+1, cfg.sigRuns, perProg(order, lats, "%.0f µs"))

		// 10,000 orphans.
		for _, p := range order {
			if p.name == "convex-shim --forward off" {
				continue // the same reaper as convex-shim
			}
			waitQuiet()
			r, err := again(func() (reapResult, error) { return reapOrphans(p) })
			if err != nil {
				return nil, fmt.Errorf("%s orphans: %w", p.name, err)
			}
			res.reap[p.name] = append(res.reap[p.name], r)
			progress("round %d  %-26s 10,000 orphans reaped %.2f s after start, %.1f ms after the last fork (backlog %d), init CPU %.2f s",
				round+1, p.name, r.total.Seconds(), float64(r.tail)/1e6, r.backlog, r.cpu)
		}
	}
	return res, nil
}

func rotateProgs(ps []initProg, n int) []initProg {
	n %= len(ps)
	return append(append([]initProg{}, ps[n:]...), ps[:n]...)
}

func perProg(order []initProg, m map[string][]float64, format string) string {
	var parts []string
	for _, p := range order {
		parts = append(parts, p.name+" "+fmt.Sprintf(format, median(m[p.name])))
	}
	return strings.Join(parts, ", ")
}

var devNull, _ = os.OpenFile(os.DevNull, os.O_RDWR, 0)

// timeRun runs argv as PID 1 of a new PID namespace and returns the
// milliseconds from just before the fork until its exit was collected.
func timeRun(argv []string) (float64, error) {
	t0 := time.Now()
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Env: cleanEnv, Files: []*os.File{devNull, devNull, devNull}, Sys: newPIDNS,
	})
	if err != nil {
		return 0, err
	}
	st, err := p.Wait()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if !st.Success() {
		return 0, fmt.Errorf("exit status %v", st)
	}
	return float64(d) / 1e6, nil
}

// idleMem starts INIT -- sleep, waits until the child runs and settles, and
// reads the init's own memory (not the child's).
func idleMem(p initProg) (mem, error) {
	cmd := exec.Command(p.path, p.argv("/bin/sleep", "1000000")[1:]...)
	cmd.Env, cmd.SysProcAttr = cleanEnv, newPIDNS
	if err := cmd.Start(); err != nil {
		return mem{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if !waitFor(10*time.Second, func() bool { return len(children(cmd.Process.Pid)) > 0 }) {
		return mem{}, fmt.Errorf("no child after 10 s")
	}
	time.Sleep(300 * time.Millisecond)
	return memOf(cmd.Process.Pid)
}

// sigLatency starts INIT -- runner sigchild, waits for the child's "ready",
// sends SIGTERM to the init and returns the microseconds until the child's
// handler ran (by CLOCK_MONOTONIC in both), and which signal it got.
func sigLatency(p initProg) (float64, string, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, "", err
	}
	cmd := exec.Command(p.path, p.argv(self, "sigchild")[1:]...)
	cmd.Env, cmd.SysProcAttr = cleanEnv, newPIDNS
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() (string, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", io.EOF
			}
			return l, nil
		case <-time.After(5 * time.Second):
			return "", fmt.Errorf("no answer from the child in 5 s")
		}
	}
	if l, err := next(); err != nil || l != "ready" {
		return 0, "", fmt.Errorf("child: %q %v", l, err)
	}
	time.Sleep(20 * time.Millisecond) // let the init go back to waiting
	t0 := monotonic()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, "", err
	}
	l, err := next()
	if err != nil {
		return 0, "", err
	}
	f := strings.Fields(l)
	if len(f) != 3 || f[0] != "sig" {
		return 0, "", fmt.Errorf("child: %q", l)
	}
	t1, _ := strconv.ParseInt(f[2], 10, 64)
	n, _ := strconv.Atoi(f[1])
	return float64(t1-t0) / 1e3, unix.SignalName(syscall.Signal(n)), nil
}

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// sigchild is the child of the SIGTERM probe: it says "ready", and on the
// first stop signal prints its number and the CLOCK_MONOTONIC time, and exits.
func sigchild() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	fmt.Println("ready")
	s := <-c
	t := monotonic()
	fmt.Printf("sig %d %d\n", s.(syscall.Signal), t)
	os.Exit(0)
}

// orphanScript double-forks 10,000 short-lived processes: each subshell
// starts ten background jobs and exits at once, so the jobs are orphans
// whose parent becomes the init (PID 1). Then it says "done" and sleeps.
const orphanScript = `i=0
while [ $i -lt 1000 ]; do
	(true & true & true & true & true & true & true & true & true & true &)
	i=$((i+1))
done
echo done
exec sleep 1000000`

func reapOrphans(p initProg) (reapResult, error) {
	var r reapResult
	cmd := exec.Command(p.path, p.argv("/bin/sh", "-c", orphanScript)[1:]...)
	cmd.Env, cmd.SysProcAttr = cleanEnv, newPIDNS
	out, _ := cmd.StdoutPipe()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	done := make(chan error, 1)
	go func() {
		l, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && l != "done\n" {
			err = fmt.Errorf("producer said %q", l)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return r, err
		}
	case <-time.After(60 * time.Second):
		return r, fmt.Errorf("the producer did not finish in 60 s")
	}
	t1 := time.Now()
	pid := cmd.Process.Pid
	left := func() int {
		n := 0
		for _, k := range children(pid) {
			if comm(k) != "sleep" {
				n++
			}
		}
		return n
	}
	r.backlog = left()
	if !waitFor(20*time.Second, func() bool { return left() == 0 }) {
		return r, fmt.Errorf("%d orphans still unreaped 20 s after the last fork", left())
	}
	t2 := time.Now()
	r.total, r.tail = t2.Sub(t0), t2.Sub(t1)
	ticks, _ := cpuTicks(pid, false)
	r.cpu = float64(ticks) / clockTick
	return r, nil
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// binInfo describes an executable: size, static (no interpreter), stripped
// (no symbol table).
type binInfo struct {
	size             int64
	static, stripped bool
}

func describeBin(path string) (binInfo, error) {
	var b binInfo
	fi, err := os.Stat(path)
	if err != nil {
		return b, err
	}
	b.size = fi.Size()
	f, err := elf.Open(path)
	if err != nil {
		return b, err
	}
	defer f.Close()
	b.static = !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	b.stripped = f.Section(".symtab") == nil
	return b, nil
}

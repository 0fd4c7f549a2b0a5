package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The ways a client reaches the upstream: directly, or through one of the
// forwarders. peers are the forwarders convex-shim is compared with.
const (
	direct = "direct"
	socat  = "socat"
	shimT  = "convex-shim"
)

var (
	targets = []string{direct, socat, haproxyT, nginxT, shimT}
	peers   = []string{socat, haproxyT, nginxT}
	fwds    = []string{socat, haproxyT, nginxT, shimT}
)

const upstreamAddr = "127.0.0.1:3210"

// portOf is where target's forwarder listens: convex-shim on 80, as in a
// container, each peer on a port of its own, so that a forwarder case can
// keep all of them running and load them in turn (see runSlices).
func portOf(target string) int {
	switch target {
	case socat:
		return 81
	case haproxyT:
		return 82
	case nginxT:
		return 83
	}
	return 80
}

// fwd is a running forwarder process.
type fwd struct {
	name   string
	cmd    *exec.Cmd
	tree   bool   // account its children too (socat forks one per connection, nginx has workers)
	forks  bool   // a child per connection (socat): drain waits for them
	dir    string // a peer's configuration, removed at stop
	stderr bytes.Buffer
}

func (f *fwd) pid() int { return f.cmd.Process.Pid }

// startFwd starts target's forwarder on portOf(target) and waits until it
// listens.
// extra are more convex-shim flags.
func startFwd(target string, extra ...string) (*fwd, error) {
	f := &fwd{name: target}
	switch target {
	case socat:
		// Exactly the seed's sidecar.
		f.cmd = exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,fork,reuseaddr", portOf(socat)), "TCP:"+upstreamAddr)
		f.tree, f.forks = true, true
	case shimT:
		// The binary as shipped, with the default forward spelled out; its
		// child only has to stay alive.
		args := append([]string{"--forward", "127.0.0.1:80=127.0.0.1:3210"}, extra...)
		args = append(args, "--", "sleep", "1000000")
		f.cmd = exec.Command(cfg.shim, args...)
	case haproxyT, nginxT:
		argv, dir, tree, err := peerCommand(target)
		if err != nil {
			return nil, err
		}
		f.cmd, f.tree, f.dir = exec.Command(argv[0], argv[1:]...), tree, dir
	default:
		return nil, fmt.Errorf("no forwarder for %s", target)
	}
	f.cmd.Env = cleanEnv
	f.cmd.Stderr = &f.stderr
	if err := f.cmd.Start(); err != nil {
		return nil, err
	}
	if !waitFor(3*time.Second, func() bool { return listening(portOf(target)) }) {
		f.stop()
		return nil, fmt.Errorf("%s: not listening on :%d after 3s; stderr: %s", target, portOf(target), f.stderr.String())
	}
	return f, nil
}

// stop ends the forwarder (SIGTERM, then SIGKILL after 3 s) and any child
// socat left, and waits until its port is free.
func (f *fwd) stop() {
	pid := f.pid()
	kids := children(pid)
	f.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		f.cmd.Process.Kill()
		<-done
	}
	if f.tree {
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
	}
	waitFor(3*time.Second, func() bool { return !listening(portOf(f.name)) })
	if f.dir != "" {
		os.RemoveAll(f.dir)
	}
}

func (f *fwd) cpu() int64 {
	t, _ := cpuTicks(f.pid(), f.tree)
	return t
}

func (f *fwd) mem() mem {
	m, _ := memTree(f.pid(), f.tree)
	return m
}

// drain waits (at most 3 s) until a forwarder that forks per connection
// has no children left, so that their CPU time has reached the parent's
// cutime and cstime. nginx's workers stay: their CPU is read directly.
func (f *fwd) drain() {
	if f.forks {
		waitFor(3*time.Second, func() bool { return len(children(f.pid())) == 0 })
	}
}

// fcase is one forwarder measurement.
type fcase struct {
	key, label string
	mode       string
	c          int
}

var fcases = []fcase{
	{"conn1", "new connection per request, c=1", "conn", 1},
	{"conn64", "new connection per request, c=64", "conn", 64},
	{"ka64", "keep-alive, c=64", "keepalive", 64},
	{"bulk1", "bulk, 1 stream", "bulk", 1},
	{"bulk8", "bulk, 8 streams", "bulk", 8},
}

// loadResult is what bench/load prints.
type loadResult struct {
	Setup         float64          `json:"setup_s"`
	Window        float64          `json:"window_s"`
	Requests      int64            `json:"requests"`
	Errors        int64            `json:"errors"`
	ErrorKinds    map[string]int64 `json:"error_kinds"`
	RPS           float64          `json:"rps"`
	P50           float64          `json:"p50_ms"`
	P99           float64          `json:"p99_ms"`
	Max           float64          `json:"max_ms"`
	GBps          float64          `json:"gb_per_s"`
	TotalRequests int64            `json:"total_requests"`
	TotalBytes    int64            `json:"total_bytes"`
}

// caseResult is one run of one case against one target.
type caseResult struct {
	load      loadResult
	cpu       float64 // forwarder CPU seconds over the whole run
	loadCPU   float64 // the load generator's CPU seconds
	upCPU     float64 // the upstream's CPU seconds
	wall      float64 // seconds the load generator ran
	others    float64 // share of all CPUs other processes used during the run
	softirq   float64 // CPU seconds of the kernel's ksoftirqd threads (loopback packets they took over)
	busy      mem     // max sampled during the window (keep-alive only)
	afterBusy mem     // 0.5 s after the keep-alive load ended
}

func addrOf(target string) string {
	if target == direct {
		return upstreamAddr
	}
	return "127.0.0.1:" + strconv.Itoa(portOf(target))
}

// startPath starts target's forwarder, or returns nil for direct.
func startPath(target string) (*fwd, error) {
	if target == direct {
		return nil, nil
	}
	return startFwd(target)
}

// measure loads target for one slice: warm-up, then dur measured. f is
// target's running forwarder, nil for direct.
func measure(c fcase, target string, f *fwd, warmup, dur time.Duration) (caseResult, error) {
	var r caseResult
	var cpu0 int64
	if f != nil {
		cpu0 = f.cpu()
	}
	up0, _ := cpuTicks(upstreamPid, false)
	busy0, total0 := cpuTotals()
	soft0 := softirqTicks()

	// Sample memory three times inside the window: enough to see the
	// peak, too few to steal CPU from the run.
	var busy mem
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sampled)
		if f == nil || c.mode != "keepalive" {
			return
		}
		for i := 1; i <= 3; i++ {
			at := start.Add(warmup + dur*time.Duration(i)/4)
			select {
			case <-time.After(time.Until(at)):
			case <-stopSampling:
				return
			}
			m := f.mem()
			busy.rss, busy.pss = max(busy.rss, m.rss), max(busy.pss, m.pss)
		}
	}()
	lr, usage, err := runLoad(addrOf(target), c.mode, c.c, warmup, dur)
	close(stopSampling)
	<-sampled
	if err != nil {
		return r, err
	}
	up1, _ := cpuTicks(upstreamPid, false)
	r.load, r.busy = lr, busy
	r.loadCPU, r.wall, r.upCPU = usage.cpu, usage.wall, float64(up1-up0)/clockTick
	var fwdCPU float64
	if f != nil {
		fwdCPU = float64(f.cpu()-cpu0) / clockTick
	}
	busy1, total1 := cpuTotals()
	r.softirq = float64(softirqTicks()-soft0) / clockTick
	if total1 > total0 {
		ours := (r.loadCPU + r.upCPU + fwdCPU + r.softirq) * clockTick
		r.others = max(0, (float64(busy1-busy0)-ours)/float64(total1-total0))
	}
	if f != nil {
		f.drain()
		r.cpu = float64(f.cpu()-cpu0) / clockTick
		if c.mode == "keepalive" {
			time.Sleep(500 * time.Millisecond)
			r.afterBusy = f.mem()
		}
	}
	return r, nil
}

// usage is what a load run cost: CPU seconds and wall-clock seconds.
type usage struct{ cpu, wall float64 }

// runLoad runs bench/load once and decodes its result.
func runLoad(addr, mode string, c int, warmup, dur time.Duration) (loadResult, usage, error) {
	var lr loadResult
	var u usage
	ctx, cancel := context.WithTimeout(context.Background(), warmup+dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.load, "-addr", addr, "-mode", mode, "-c", strconv.Itoa(c),
		"-d", dur.String(), "-warmup", warmup.String())
	cmd.Env = append(cleanEnv, "GOMAXPROCS="+strconv.Itoa(cfg.loadProcs))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return lr, u, fmt.Errorf("load %s -c %d on %s: %v: %s", mode, c, addr, err, stderr.String())
	}
	u.wall = time.Since(t0).Seconds()
	u.cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if err := json.Unmarshal(out, &lr); err != nil {
		return lr, u, fmt.Errorf("load output: %v: %q", err, out)
	}
	u.wall -= lr.Setup // connecting is not part of the run
	return lr, u, nil
}

// memResult is one memory step: a fresh forwarder idle, then holding 64
// idle connections.
type memResult struct{ idle, held mem }

func runMem(target string) (memResult, error) {
	var r memResult
	f, err := startFwd(target)
	if err != nil {
		return r, err
	}
	defer f.stop()
	time.Sleep(300 * time.Millisecond)
	r.idle = f.mem()

	stop, err := holdConns(addrOf(target), 64)
	if err != nil {
		return r, err
	}
	time.Sleep(300 * time.Millisecond)
	r.held = f.mem()
	if err := stop(); err != nil {
		return r, err
	}
	f.drain()
	return r, nil
}

// fwdResults holds every round: [case key][target] and [target], and the
// wrk cross-checks: [case key].
type fwdResults struct {
	cases map[string]map[string][]caseResult
	mem   map[string][]memResult
	wrk   map[string]map[string][]float64
}

// wrkCases cross-check bench/load: Debian's wrk, a C load generator that
// needs less CPU per connection, on the same cases and targets.
type wrkCase struct{ key, label string }

var wrkCases = []wrkCase{
	{"conn64", "new connection per request, c=64"},
	{"ka64", "keep-alive, c=64"},
}

// runWrk runs Debian's wrk (2 threads, as bench/load gets 2 Ps) against
// target, through a fresh forwarder of its own, for the measured time in
// whole seconds (wrk takes no fractions and has no warm-up) and returns its
// requests per second.
func runWrk(key, target string) (float64, error) {
	if target != direct {
		f, err := startFwd(target)
		if err != nil {
			return 0, err
		}
		defer f.stop()
	}
	secs := int(math.Ceil(cfg.dur.Seconds()))
	args := []string{"-t2", "-c64", "-d", strconv.Itoa(secs) + "s"}
	if key == "conn64" {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+addrOf(target)+"/version")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.warmup+cfg.dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.Env = cleanEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk %v: %v: %s", args, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Requests/sec:"); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
		if strings.Contains(l, "Non-2xx") {
			return 0, fmt.Errorf("wrk: %s", l)
		}
	}
	return 0, fmt.Errorf("wrk: no Requests/sec in %q", out)
}

// runForwarder runs every case against every target: in each round and
// case, every forwarder runs at once and the targets take turns in short
// slices (runSlices), so that targets compared are loaded seconds apart.
// Each slice is one result, with ratios taken within it. The wrk
// cross-checks follow, one fresh forwarder per target.
func runForwarder() (*fwdResults, error) {
	res := &fwdResults{cases: map[string]map[string][]caseResult{}, mem: map[string][]memResult{}, wrk: map[string]map[string][]float64{}}
	for _, c := range fcases {
		res.cases[c.key] = map[string][]caseResult{}
		res.wrk[c.key] = map[string][]float64{}
	}
	for round := range cfg.rounds {
		order := rotate(targets, round)
		for _, c := range fcases {
			byTarget, err := runSlices(c, order, round)
			if err != nil {
				return nil, err
			}
			for t, rs := range byTarget {
				res.cases[c.key][t] = append(res.cases[c.key][t], rs...)
			}
			for _, t := range order {
				if slices.ContainsFunc(wrkCases, func(w wrkCase) bool { return w.key == c.key }) {
					rps, err := again(func() (float64, error) { return runWrk(c.key, t) })
					if err != nil {
						return nil, err
					}
					res.wrk[c.key][t] = append(res.wrk[c.key][t], rps)
					progress("round %d  %-34s %-12s %.0f req/s with wrk -t2 (cross-check)", round+1, c.label, t, rps)
				}
			}
		}
		for _, t := range rotate(fwds, round) {
			waitQuiet()
			m, err := again(func() (memResult, error) { return runMem(t) })
			if err != nil {
				return nil, fmt.Errorf("memory, %s: %w", t, err)
			}
			res.mem[t] = append(res.mem[t], m)
			progress("round %d  %-34s %-12s idle %s, 64 idle conns %s", round+1, "memory", t, mib(m.idle.rss), mib(m.held.rss))
		}
	}
	return res, nil
}

// runSlices runs one round of case c: it starts every forwarder, each on
// its own port, then loads the targets in turn, cfg.slices times, each
// slice a share of the warm-up and measured time, and stops them. The
// machine's speed drifts by a third over minutes on a shared VM (HAProxy's
// keep-alive rate spread from 23,448 to 35,210 req/s over three rounds
// when each target ran 3.5 s in a row with a fresh process); targets taken
// a second apart see the same machine, so their ratio holds.
func runSlices(c fcase, order []string, round int) (map[string][]caseResult, error) {
	waitQuiet()
	running := map[string]*fwd{}
	defer func() {
		for _, f := range running {
			f.stop()
		}
	}()
	for _, t := range order {
		if t == direct {
			continue
		}
		f, err := again(func() (*fwd, error) { return startFwd(t) })
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", c.label, t, err)
		}
		running[t] = f
	}
	warmup, dur := cfg.warmup/time.Duration(cfg.slices), cfg.dur/time.Duration(cfg.slices)
	res := map[string][]caseResult{}
	for s := range cfg.slices {
		for _, t := range rotate(order, s) {
			r, err := quietSlice(c, t, running[t], warmup, dur)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", c.label, t, err)
			}
			res[t] = append(res[t], r)
			progress("round %d.%d  %-34s %-12s %s", round+1, s+1, c.label, t, brief(c, r))
		}
	}
	return res, nil
}

// quietSlice measures a slice, and measures it again (at most twice) when
// other work took more than 10% of the CPU during it: a burst from another
// user of the machine would otherwise stand in the table.
func quietSlice(c fcase, t string, f *fwd, warmup, dur time.Duration) (caseResult, error) {
	var r caseResult
	var err error
	for try := 1; try <= 3; try++ {
		if r, err = again(func() (caseResult, error) { return measure(c, t, f, warmup, dur) }); err != nil || r.others <= 0.10 {
			return r, err
		}
		if try < 3 {
			progress("%s, %s: other work took %.0f%% of the CPU; running it again", c.label, t, 100*r.others)
		}
	}
	return r, err
}

func rotate(xs []string, n int) []string {
	n %= len(xs)
	return append(append([]string{}, xs[n:]...), xs[:n]...)
}

func brief(c fcase, r caseResult) string {
	l := r.load
	s := ""
	if c.mode == "bulk" {
		s = fmt.Sprintf("%.2f GB/s", l.GBps)
	} else {
		s = fmt.Sprintf("%.0f req/s p50 %.2f ms p99 %.2f ms errors %d", l.RPS, l.P50, l.P99, l.Errors)
		if l.Errors > 0 {
			s += fmt.Sprintf(" %v", l.ErrorKinds)
		}
	}
	if r.cpu > 0 {
		s += fmt.Sprintf(", forwarder CPU %.2f s", r.cpu)
	}
	if r.busy.rss > 0 {
		s += ", busy RSS " + mib(r.busy.rss)
	}
	if r.others >= 0.05 {
		s += fmt.Sprintf(" [other work took %.0f%% of the CPU]", 100*r.others)
	}
	return s
}

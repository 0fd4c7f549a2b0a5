// Command runner is the driver of make bench: it measures the convex-shim
// forwarder against a direct connection, the seed's socat sidecar, HAProxy
// and nginx's stream module (also as connections grow to 9,000), and
// the convex-shim init against tini, dumb-init and catatonit, and writes the
// tables into docs/benchmarks.md.
//
// Run it through bench/bench.sh, which builds everything and starts it in a
// private network namespace: it refuses to run where any interface but lo
// exists, so all load stays on a loopback nobody else uses.
//
//	runner -shim bin/convex-shim -load bin/bench/load -upstream bin/bench/upstream \
//	       -out docs/benchmarks.md
//
// Every case is repeated -rounds times; within a round the paths run
// one after another (the order rotated each round), so slow drift on the
// machine hits all of them alike. Tables show the median of the rounds and
// their min–max; ratios are taken within each round.
//
// The output file keeps everything outside the markers
// "<!-- bench:begin -->" and "<!-- bench:end -->"; between them it writes
// the latest results.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/convex-shim/convex-shim/bench/internal/benchenv"
)

var cfg struct {
	shim, load, upstream, out string
	mininit                   string
	rounds, slices            int
	dur, warmup               time.Duration
	loadProcs                 int
	startRuns, sigRuns        int
	only                      string
	extraInits                string
	quietWait                 time.Duration
	command                   string
}

// cleanEnv is every child's environment: no CONVEX_* origin may leak in
// and add forwards.
var cleanEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

var began = time.Now()

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sigchild" {
		sigchild()
		return
	}
	flag.StringVar(&cfg.shim, "shim", "bin/convex-shim", "the convex-shim binary as shipped")
	flag.StringVar(&cfg.load, "load", "bin/bench/load", "the bench/load binary")
	flag.StringVar(&cfg.upstream, "upstream", "bin/bench/upstream", "the bench/upstream binary")
	flag.StringVar(&cfg.mininit, "mininit", "bin/bench/mininit", "the bench/mininit binary (the start-time floor)")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks.md", "file to write the results into (\"\": stdout only)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds of every case")
	flag.IntVar(&cfg.slices, "slices", 3, "slices each target's time in a forwarder case's round is split into, the targets taking turns")
	flag.DurationVar(&cfg.dur, "d", 3*time.Second, "measured time per target of each forwarder case (split into -slices) and of each scale case")
	flag.DurationVar(&cfg.warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up before each forwarder case (split like -d) and scale case")
	flag.IntVar(&cfg.loadProcs, "load-procs", 2, "GOMAXPROCS of the load generator")
	flag.IntVar(&cfg.startRuns, "start-runs", 100, "runs of INIT -- /bin/true per init and round")
	flag.IntVar(&cfg.sigRuns, "sig-runs", 20, "SIGTERM latency runs per init and round")
	flag.StringVar(&cfg.only, "only", "forward,scale,probes,init", "parts to run")
	flag.DurationVar(&cfg.quietWait, "quiet-wait", 60*time.Second, "before each case, wait at most this long for other work on the machine to calm down")
	flag.StringVar(&cfg.extraInits, "extra-inits", "", "more inits to compare, NAME=PATH,... (candidate convex-shim builds)")
	flag.StringVar(&cfg.command, "command", "make bench", "the command to quote in the output")
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		os.Exit(1)
	}
}

func run() error {
	if err := benchenv.CheckPrivateNet("run me through bench/bench.sh"); err != nil {
		return err
	}
	if cfg.rounds < 1 || cfg.slices < 1 {
		return fmt.Errorf("-rounds %d -slices %d: both must be at least 1", cfg.rounds, cfg.slices)
	}
	for _, p := range []*string{&cfg.shim, &cfg.load, &cfg.upstream, &cfg.mininit} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	m := machine()
	progress("machine: %s", m.String())

	var (
		fr  *fwdResults
		sr  scaleResults
		pr  probeResults
		ir  *initResults
		err error
	)
	if strings.Contains(cfg.only, "forward") || strings.Contains(cfg.only, "scale") || strings.Contains(cfg.only, "probes") {
		up, err := startUpstream()
		if err != nil {
			return err
		}
		if strings.Contains(cfg.only, "forward") {
			if fr, err = runForwarder(); err != nil {
				up.stop()
				return err
			}
		}
		if strings.Contains(cfg.only, "scale") {
			if sr, err = runScale(); err != nil {
				up.stop()
				return err
			}
		}
		up.stop()
		if strings.Contains(cfg.only, "probes") {
			if pr, err = runProbes(); err != nil {
				return err
			}
		}
	}
	if strings.Contains(cfg.only, "init") {
		if ir, err = runInits(); err != nil {
			return err
		}
	}
	m.loadEnd = loadavg()
	m.elapsed = time.Since(began)
	if s := os.Getenv("BENCH_START"); s != "" {
		var sec, nsec int64
		if _, err := fmt.Sscanf(s, "%d.%d", &sec, &nsec); err == nil {
			m.elapsed = time.Since(time.Unix(sec, nsec))
		}
	}
	text := report(m, fr, sr, pr, ir)
	fmt.Print(text)
	if cfg.out == "" {
		return nil
	}
	return benchenv.WriteBetweenMarkers(cfg.out, beginMarker, endMarker, text)
}

type proc struct{ cmd *exec.Cmd }

// upstreamPid is the running bench upstream, whose CPU time each case reads.
var upstreamPid int

func startUpstream() (*proc, error) {
	cmd := exec.Command(cfg.upstream, "-listen", upstreamAddr)
	cmd.Env, cmd.Stderr = cleanEnv, os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || l != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("upstream: %q %v", l, err)
	}
	upstreamPid = cmd.Process.Pid
	return &proc{cmd}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

// again runs f up to three times: a machine shared with other work can
// fail a fork or a listen now and then. Each failure is reported.
func again[T any](f func() (T, error)) (T, error) {
	var err error
	for try := 1; ; try++ {
		var v T
		if v, err = f(); err == nil || try == 3 {
			return v, err
		}
		progress("failed (try %d of 3, trying again): %v", try, err)
		time.Sleep(time.Second)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

const (
	beginMarker = "<!-- bench:begin -->"
	endMarker   = "<!-- bench:end -->"
)

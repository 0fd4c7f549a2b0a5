package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Cost as work grows: each forwarder holds N idle connections (one request
// each, then quiet, as a Node action's open keep-alive sockets), and new
// connections churn through it on top, c=min(N, 64) workers each making a
// connection per request. The held connections give the RSS per held
// connection; the churn gives the CPU per new connection and its latency
// while N are open. The churn stays at 64 workers (not N) because a closed
// loop of 9,000 connecting workers measures SYN drops at the accept
// backlog (somaxconn 4096 here), not the forwarder.
var scaleNs = []int{1, 64, 1000, 9000}

// scaleTargets are the paths of the scale cases: socat forks a process per
// connection and cannot hold 9,000.
var scaleTargets = []string{direct, haproxyT, nginxT, shimT}

type scaleResult struct {
	idle, held mem
	n, c       int
	load       loadResult
	cpu        float64 // forwarder CPU seconds over the churn run
}

func (r scaleResult) rssPerHeld() float64 {
	return float64(r.held.rss-r.idle.rss) / float64(r.n)
}

func (r scaleResult) cpuPerConn() float64 {
	return r.cpu / float64(r.load.TotalRequests) * 1e6
}

// scaleResults are [N][target], one per round.
type scaleResults map[int]map[string][]scaleResult

func runScale() (scaleResults, error) {
	res := scaleResults{}
	for _, n := range scaleNs {
		res[n] = map[string][]scaleResult{}
	}
	for round := range cfg.rounds {
		for _, n := range scaleNs {
			for _, t := range rotate(scaleTargets, round) {
				waitQuiet()
				r, err := again(func() (scaleResult, error) { return scaleCase(n, t) })
				if err != nil {
					return nil, fmt.Errorf("scale, %d held, %s: %w", n, t, err)
				}
				res[n][t] = append(res[n][t], r)
				s := fmt.Sprintf("%.0f req/s p50 %.2f ms p99 %.2f ms errors %d", r.load.RPS, r.load.P50, r.load.P99, r.load.Errors)
				if t != direct {
					s += fmt.Sprintf(", forwarder CPU %.0f µs per connection, RSS %s idle, %s held, %.1f KiB per held connection",
						r.cpuPerConn(), mib(r.idle.rss), mib(r.held.rss), r.rssPerHeld()/1024)
				}
				progress("round %d  scale: %5d held + %2d new-connection workers  %-12s %s", round+1, n, r.c, t, s)
			}
		}
	}
	return res, nil
}

func scaleCase(n int, target string) (scaleResult, error) {
	r := scaleResult{n: n, c: min(n, 64)}
	f, err := startPath(target)
	if err != nil {
		return r, err
	}
	if f != nil {
		defer f.stop()
		time.Sleep(300 * time.Millisecond)
		r.idle = f.mem()
	}
	stop, err := holdConns(addrOf(target), n)
	if err != nil {
		return r, err
	}
	held := true
	defer func() {
		if held {
			stop()
		}
	}()
	if f != nil {
		time.Sleep(300 * time.Millisecond)
		r.held = f.mem()
	}
	var cpu0 int64
	if f != nil {
		cpu0 = f.cpu()
	}
	lr, _, err := runLoad(addrOf(target), "conn", r.c, cfg.warmup, cfg.dur)
	if err != nil {
		return r, err
	}
	r.load = lr
	// Read before the held connections close: tearing 9,000 of them down
	// is not the churn's work (it added 84 µs per new connection to
	// convex-shim's figure at 9,000 held). No forwarder in the scale cases
	// forks per connection, so nothing is left to drain.
	if f != nil {
		r.cpu = float64(f.cpu()-cpu0) / clockTick
	}
	held = false
	return r, stop()
}

// holdConns has bench/load hold n connections to addr, each after one
// request, until stop is called; stop fails if any of them failed.
func holdConns(addr string, n int) (stop func() error, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, cfg.load, "-addr", addr, "-mode", "hold", "-c", strconv.Itoa(n), "-d", "4m")
	cmd.Env = append(cleanEnv, "GOMAXPROCS="+strconv.Itoa(cfg.loadProcs))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	br := bufio.NewReader(stdout)
	line, err := br.ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		cmd.Process.Kill()
		cmd.Wait()
		cancel()
		return nil, fmt.Errorf("load hold -c %d: %q %v", n, line, err)
	}
	return func() error {
		defer cancel()
		stdin.Close()
		rest, _ := io.ReadAll(br)
		cmd.Wait()
		var lr loadResult
		if err := json.Unmarshal(rest, &lr); err != nil {
			return fmt.Errorf("load hold -c %d: %v: %q", n, err, rest)
		}
		if lr.Errors > 0 {
			return fmt.Errorf("load hold: %d of %d connections failed", lr.Errors, n)
		}
		return nil
	}, nil
}

func (sr scaleResults) per(n int, target string, f func(scaleResult) float64) []float64 {
	var xs []float64
	for _, r := range sr[n][target] {
		xs = append(xs, f(r))
	}
	return xs
}

func scaleTable(b *strings.Builder, sr scaleResults) {
	fmt.Fprintf(b, "### Cost as work grows\n\nEach forwarder holds N idle connections (one request each, then quiet), read for RSS; then new connections churn through it on top (min(N, 64) workers, a connection per request, %v measured) for CPU and latency. RSS per held connection is (RSS holding N − RSS fresh) / N; at N = 1 that is mostly noise of page granularity. socat is left out: a process per connection.\n\n", cfg.dur)
	b.WriteString(pathsHeader("N held"))
	for _, n := range scaleNs {
		row := func(label string, f func(scaleResult) float64, higher bool, prec int, how string, fwdOnly bool) {
			pathsRow(b, fmt.Sprintf("%s: %s", num(float64(n), 0), label), func(t string) []float64 {
				if fwdOnly && t == direct {
					return nil
				}
				return sr.per(n, t, f)
			}, higher, prec, how)
		}
		row("new connections req/s", func(r scaleResult) float64 { return r.load.RPS }, true, 0, "ratio", false)
		row("p50 ms", func(r scaleResult) float64 { return r.load.P50 }, false, 2, "diff", false)
		row("p99 ms", func(r scaleResult) float64 { return r.load.P99 }, false, 2, "diff", false)
		row("errors", func(r scaleResult) float64 { return float64(r.load.Errors) }, false, 0, "", false)
		row("forwarder CPU µs per new connection", scaleResult.cpuPerConn, false, 0, "ratio", true)
		row("RSS KiB per held connection", func(r scaleResult) float64 { return r.rssPerHeld() / 1024 }, false, 1, "ratio", true)
	}
	b.WriteString("\n")
}

func scaleVerdicts(sr scaleResults) []verdict {
	var cpus []float64
	for _, n := range scaleNs {
		cpus = append(cpus, median(sr.per(n, shimT, scaleResult.cpuPerConn)))
	}
	lo, hi := slices.Min(cpus), slices.Max(cpus)
	var parts []string
	for i, n := range scaleNs {
		parts = append(parts, fmt.Sprintf("%s: %s µs", num(float64(n), 0), num(cpus[i], 0)))
	}
	vs := []verdict{{
		target:   "CPU per new connection flat from 1 to 9,000 held: max ≤ 1.2 × min",
		measured: fmt.Sprintf("%s× (%s)", num(hi/lo, 2), strings.Join(parts, ", ")),
		pass:     hi/lo <= 1.2,
	}}
	for _, n := range []int{1000, 9000} {
		kib := func(t string) []float64 {
			return sr.per(n, t, func(r scaleResult) float64 { return r.rssPerHeld() / 1024 })
		}
		vs = append(vs, check(fmt.Sprintf("RSS per held connection at %s ≤ HAProxy's", num(float64(n), 0)),
			ratio(kib(shimT), kib(haproxyT)), 2, fmt.Sprintf("× HAProxy's (%s against %s KiB)", cell(kib(shimT), 1), cell(kib(haproxyT), 1)),
			func(x float64) bool { return x <= 1 }))
	}
	return vs
}

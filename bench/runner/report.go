package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/convex-shim/convex-shim/bench/internal/benchenv"
	"golang.org/x/sys/unix"
)

// machineInfo is what the report says about where it ran.
type machineInfo struct {
	date               time.Time
	cores              int
	cpu, kernel, mem   string
	loadStart, loadEnd string
	busyBefore         float64 // share of all cores busy in the 2 s before the run
	goVersion          string
	versions           []string // "name version"
	elapsed            time.Duration
}

func machine() *machineInfo {
	m := &machineInfo{date: time.Now().UTC(), cores: runtime.NumCPU(), goVersion: runtime.Version(), loadStart: loadavg()}
	m.busyBefore = busyShare(2 * time.Second)
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	if out, err := exec.Command(cfg.shim, "--version").Output(); err == nil {
		m.versions = append(m.versions, strings.TrimSpace(string(out)))
	}
	for _, pkg := range []string{"socat", "haproxy", "nginx", "libnginx-mod-stream", "tini", "dumb-init", "catatonit"} {
		if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output(); err == nil {
			m.versions = append(m.versions, pkg+" "+string(out))
		}
	}
	return m
}

// cpuTotals reads the first line of /proc/stat: clock ticks all CPUs
// spent busy, and in all.
func cpuTotals() (busy, total int64) {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return
}

// busyShare samples /proc/stat over d: the share of all CPUs' time that
// was not idle, other machine users included.
func busyShare(d time.Duration) float64 {
	b0, t0 := cpuTotals()
	time.Sleep(d)
	b1, t1 := cpuTotals()
	if t1 == t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0)
}

// waitQuiet waits, at most cfg.quietWait, until other work on the machine
// uses under 15% of the CPU (sampled over 300 ms), so that a case does not
// start in the middle of someone else's burst. It reports the waits.
func waitQuiet() {
	deadline := time.Now().Add(cfg.quietWait)
	for i := 0; ; i++ {
		b := busyShare(300 * time.Millisecond)
		if b < 0.15 {
			return
		}
		if time.Now().After(deadline) {
			progress("the machine is still %.0f%% busy with other work after %v; going on", 100*b, cfg.quietWait)
			return
		}
		if i == 0 {
			progress("the machine is %.0f%% busy with other work; waiting (at most %v)", 100*b, cfg.quietWait)
		}
		time.Sleep(700 * time.Millisecond)
	}
}

func (m *machineInfo) String() string {
	return fmt.Sprintf("%d cores (%s), Linux %s, %s RAM, load average %s, CPU %.0f%% busy in the 2 s before", m.cores, m.cpu, m.kernel, m.mem, m.loadStart, 100*m.busyBefore)
}

// Statistics over rounds: benchenv's, shared with bench/callbacks.
var (
	median  = benchenv.Median
	num     = benchenv.Num
	loadavg = benchenv.Loadavg
)

// cell formats the median and the min–max of xs with prec decimals.
func cell(xs []float64, prec int) string {
	return benchenv.Cell(xs, func(x float64) string { return num(x, prec) })
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// per collects one figure of each round of a case for a target.
func (fr *fwdResults) per(key, target string, f func(caseResult) float64) []float64 {
	var xs []float64
	for _, r := range fr.cases[key][target] {
		xs = append(xs, f(r))
	}
	return xs
}

// ratio is a/b within each round.
func ratio(a, b []float64) []float64 {
	var xs []float64
	for i := range min(len(a), len(b)) {
		xs = append(xs, a[i]/b[i])
	}
	return xs
}

func diff(a, b []float64) []float64 {
	var xs []float64
	for i := range min(len(a), len(b)) {
		xs = append(xs, a[i]-b[i])
	}
	return xs
}

// verdict is one target's line.
type verdict struct {
	target, measured string
	pass             bool
	rounds, of       int // runs (rounds, or a forwarder case's slices) meeting it
}

func check(target string, xs []float64, prec int, unit string, ok func(float64) bool) verdict {
	v := verdict{target: target, measured: cell(xs, prec) + unit, pass: ok(median(xs)), of: len(xs)}
	for _, x := range xs {
		if ok(x) {
			v.rounds++
		}
	}
	return v
}

func (v verdict) row() string {
	s := "MISS"
	if v.pass {
		s = "PASS"
	}
	if v.of > 1 {
		s += fmt.Sprintf(" (%d of %d runs)", v.rounds, v.of)
	}
	return fmt.Sprintf("| %s | %s | %s |\n", v.target, v.measured, s)
}

const mibF = 1 << 20

func report(m *machineInfo, fr *fwdResults, sr scaleResults, pr probeResults, ir *initResults) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("Latest run: %s, `%s`, %s in all (build included).\n\n", m.date.Format("2006-01-02 15:04 UTC"), cfg.command, m.elapsed.Round(time.Second))
	w("- Machine: %d cores, %s; Linux %s; %s RAM. Before the run: load average (1, 5, 15 min) %s, CPU %.0f%% busy over 2 s (other users of the machine); at the end (the bench's own load included): %s.\n",
		m.cores, m.cpu, m.kernel, m.mem, m.loadStart, 100*m.busyBefore, m.loadEnd)
	w("- Software: %s (static, as `make build` ships it); Debian's %s; %s.\n",
		firstOr(m.versions, "convex-shim"), strings.Join(m.versions[min(1, len(m.versions)):], ", "), m.goVersion)
	w("- Setup: a private network namespace (`unshare --net`, lo only); upstream `bench/upstream` (net/http) on 127.0.0.1:3210; "+
		"convex-shim on port 80, the peers on 81–83; load from `bench/load` with GOMAXPROCS=%d; nothing pinned to cores. "+
		"Each forwarder case, %d rounds: in each round every forwarder is started afresh and runs at once, and the targets take turns, in a rotated order, "+
		"in %d slices of %v warm-up + %v measured (%v measured per target and round), so that targets compared ran seconds apart on the same machine. "+
		"Forwarder cells: median of the slices (min–max), ratios taken within each slice; other cells: median of the rounds.\n",
		cfg.loadProcs, cfg.rounds, cfg.slices, (cfg.warmup / time.Duration(cfg.slices)).Round(time.Millisecond), (cfg.dur / time.Duration(cfg.slices)).Round(time.Millisecond), cfg.dur)

	if fr != nil {
		var others []float64
		for _, byTarget := range fr.cases {
			for _, rs := range byTarget {
				for _, r := range rs {
					others = append(others, 100*r.others)
				}
			}
		}
		w("- Noise: before each case (and each round of a forwarder case) the runner waits (at most %v) until other work uses under 15%% of the CPU, and measures a slice or case again (up to twice) when other work took over 10%% during it. "+
			"During the forwarder cases other processes took a median %.0f%% and at most %.0f%% of the machine's CPU (from /proc/stat, less the bench's own three processes and the kernel's ksoftirqd threads).\n",
			cfg.quietWait, median(others), slices.Max(others))
	}
	b.WriteString("\n")
	var verdicts []verdict
	if fr != nil {
		verdicts = append(verdicts, forwarderVerdicts(fr)...)
	}
	if sr != nil {
		verdicts = append(verdicts, scaleVerdicts(sr)...)
	}
	if pr != nil {
		hc := pr["halfclose"][shimT]
		verdicts = append(verdicts, verdict{target: "half-close, response 2 s later: arrives whole", measured: hc, pass: strings.HasPrefix(hc, "whole")})
	}
	if ir != nil {
		verdicts = append(verdicts, initVerdicts(ir)...)
	}
	if len(verdicts) > 0 {
		w("### Targets\n\n| target | convex-shim | |\n|---|---|---|\n")
		for _, v := range verdicts {
			b.WriteString(v.row())
		}
		b.WriteString("\n")
	}
	if fr != nil {
		forwarderTable(&b, fr)
	}
	if sr != nil {
		scaleTable(&b, sr)
	}
	if pr != nil {
		w("### Behaviour probes\n\n| probe | %s |\n|---|", strings.Join(targets, " | "))
		for range targets {
			w("---|")
		}
		w("\n")
		for _, p := range probes {
			w("| %s |", p.label)
			for _, t := range targets {
				w(" %s |", dash(pr[p.key][t]))
			}
			w("\n")
		}
		b.WriteString("\n")
	}
	if ir != nil {
		initTable(&b, ir)
	}
	return b.String()
}

func firstOr(xs []string, def string) string {
	if len(xs) == 0 {
		return def
	}
	return xs[0]
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func rps(r caseResult) float64       { return r.load.RPS }
func p50(r caseResult) float64       { return r.load.P50 }
func p99(r caseResult) float64       { return r.load.P99 }
func errs(r caseResult) float64      { return float64(r.load.Errors) }
func gbps(r caseResult) float64      { return r.load.GBps }
func cpuGB(r caseResult) float64     { return r.cpu / (float64(r.load.TotalBytes) / 1e9) }
func cpu10k(r caseResult) float64    { return r.cpu / float64(r.load.TotalRequests) * 1e4 }
func cpuPerReq(r caseResult) float64 { return r.cpu / float64(r.load.TotalRequests) * 1e6 }

func forwarderVerdicts(fr *fwdResults) []verdict {
	d, s := func(k string, f func(caseResult) float64) []float64 { return fr.per(k, direct, f) },
		func(k string, f func(caseResult) float64) []float64 { return fr.per(k, shimT, f) }
	so := func(k string, f func(caseResult) float64) []float64 { return fr.per(k, socat, f) }
	ge := func(t float64) func(float64) bool { return func(x float64) bool { return x >= t } }
	le := func(t float64) func(float64) bool { return func(x float64) bool { return x <= t } }
	var totalErr float64
	for _, k := range []string{"conn1", "conn64", "ka64"} {
		for _, e := range s(k, errs) {
			totalErr += e
		}
	}
	var busy, idle []float64
	for _, r := range fr.cases["ka64"][shimT] {
		busy = append(busy, float64(r.busy.rss)/mibF)
	}
	for _, r := range fr.mem[shimT] {
		idle = append(idle, float64(r.idle.rss)/mibF)
	}
	withWrk := func(v verdict, key string) verdict {
		m := fr.wrk[key]
		if len(m[shimT]) > 0 {
			v.measured += "; with wrk " + cell(ratio(m[shimT], m[direct]), 2) + "×"
		}
		return v
	}
	return append([]verdict{
		withWrk(check("new connections c=64: ≥ 0.6× direct", ratio(s("conn64", rps), d("conn64", rps)), 2, "×", ge(0.6)), "conn64"),
		check("new connections c=64: p99 ≤ direct p99 + 2 ms", diff(s("conn64", p99), d("conn64", p99)), 2, " ms over direct", le(2)),
		{target: "new connections and keep-alive: zero errors", measured: num(totalErr, 0) + " errors in all rounds", pass: totalErr == 0},
		withWrk(check("keep-alive c=64: ≥ 0.7× direct", ratio(s("ka64", rps), d("ka64", rps)), 2, "×", ge(0.7)), "ka64"),
		check("bulk, 1 stream: ≥ 0.6× direct", ratio(s("bulk1", gbps), d("bulk1", gbps)), 2, "×", ge(0.6)),
		check("bulk, 8 streams: ≥ 0.6× direct", ratio(s("bulk8", gbps), d("bulk8", gbps)), 2, "×", ge(0.6)),
		check("CPU per GB, 1 stream: ≤ ¼ of socat's", ratio(s("bulk1", cpuGB), so("bulk1", cpuGB)), 2, "× socat's", le(0.25)),
		check("CPU per GB, 8 streams: ≤ ¼ of socat's", ratio(s("bulk8", cpuGB), so("bulk8", cpuGB)), 2, "× socat's", le(0.25)),
		check("RSS idle ≤ 4 MiB", idle, 1, " MiB", le(4)),
		check("RSS with 64 busy connections ≤ 8 MiB", busy, 1, " MiB", le(8)),
	}, bestPeerVerdicts(fr)...)
}

// bestPeerVerdicts are issue 12's: convex-shim at least matches the best
// peer, round by round, on every rate and latency, and spends no more CPU
// per connection, request or GB.
func bestPeerVerdicts(fr *fwdResults) []verdict {
	var vs []verdict
	add := func(label, key string, f func(caseResult) float64, higher bool, prec int, unit string) {
		bp, who := best(func(t string) []float64 { return fr.per(key, t, f) }, higher)
		s := fr.per(key, shimT, f)
		if higher {
			vs = append(vs, check(label+": ≥ best peer", ratio(s, bp), 2, "× "+who+unit, func(x float64) bool { return x >= 1 }))
		} else {
			vs = append(vs, check(label+": ≤ best peer", ratio(s, bp), 2, "× "+who+unit, func(x float64) bool { return x <= 1 }))
		}
	}
	for _, r := range []struct {
		label, key string
		f          func(caseResult) float64
		higher     bool
		prec       int
		unit       string
	}{
		{"new connections c=1 req/s", "conn1", rps, true, 0, ""},
		{"new connections c=1 p50", "conn1", p50, false, 2, ""},
		{"new connections c=1 p99", "conn1", p99, false, 2, ""},
		{"new connections c=64 req/s", "conn64", rps, true, 0, ""},
		{"new connections c=64 p50", "conn64", p50, false, 2, ""},
		{"new connections c=64 p99", "conn64", p99, false, 2, ""},
		{"keep-alive c=64 req/s", "ka64", rps, true, 0, ""},
		{"bulk, 1 stream GB/s", "bulk1", gbps, true, 2, ""},
		{"bulk, 8 streams GB/s", "bulk8", gbps, true, 2, ""},
		{"CPU per connection (c=1)", "conn1", cpu10k, false, 2, "'s"},
		{"CPU per connection (c=64)", "conn64", cpu10k, false, 2, "'s"},
		{"CPU per keep-alive request", "ka64", cpuPerReq, false, 2, "'s"},
		{"CPU per GB, 8 streams", "bulk8", cpuGB, false, 2, "'s"},
	} {
		add(r.label, r.key, r.f, r.higher, r.prec, r.unit)
	}
	return vs
}

// best is, round by round, the best peer's figure (the highest with
// higher, else the lowest) and the peer that most often had it.
func best(per func(target string) []float64, higher bool) ([]float64, string) {
	var xs []float64
	wins := map[string]int{}
	for i := 0; ; i++ {
		v, who := math.NaN(), ""
		for _, p := range peers {
			ys := per(p)
			if i >= len(ys) || math.IsNaN(ys[i]) {
				continue
			}
			if who == "" || (higher && ys[i] > v) || (!higher && ys[i] < v) {
				v, who = ys[i], p
			}
		}
		if who == "" {
			break
		}
		xs = append(xs, v)
		wins[who]++
	}
	name := ""
	for _, p := range peers {
		if name == "" || wins[p] > wins[name] {
			name = p
		}
	}
	return xs, name
}

// cmpCells are a row's last columns: convex-shim against direct and
// against the best peer, each within a round; how is "ratio" or "diff"
// (latencies, in ms).
func cmpCells(s, d, bp []float64, prec int, how string) (vsDirect, vsBest string) {
	switch how {
	case "ratio":
		vsDirect, vsBest = cell(ratio(s, d), 2)+"×", cell(ratio(s, bp), 2)+"×"
	case "diff":
		vsDirect, vsBest = signed(cell(diff(s, d), prec))+" ms", signed(cell(diff(s, bp), prec))+" ms"
	}
	if len(d) == 0 {
		vsDirect = "—"
	}
	return dash(vsDirect), dash(vsBest)
}

// pathsHeader is the head of every table with a column per path: each
// path, then convex-shim against direct and against the best peer.
func pathsHeader(first string) string {
	return "| " + first + " | direct | socat (seed) | HAProxy | nginx stream | convex-shim | convex-shim vs direct | best peer | convex-shim vs best peer |\n|---|---|---|---|---|---|---|---|---|\n"
}

// pathsRow writes one row: every path's cell (a peer's with its ratio to
// direct where how is "ratio"), then the comparisons.
func pathsRow(b *strings.Builder, label string, per func(target string) []float64, higher bool, prec int, how string) {
	d := per(direct)
	fmt.Fprintf(b, "| %s | %s |", label, cell(d, prec))
	for _, t := range []string{socat, haproxyT, nginxT, shimT} {
		c := cell(per(t), prec)
		if how == "ratio" && len(d) > 0 && len(per(t)) > 0 && t != shimT {
			c += " = " + num(median(ratio(per(t), d)), 2) + "×"
		}
		fmt.Fprintf(b, " %s |", c)
	}
	bp, who := best(per, higher)
	vd, vb := cmpCells(per(shimT), d, bp, prec, how)
	fmt.Fprintf(b, " %s | %s | %s |\n", vd, who, vb)
}

func forwarderTable(b *strings.Builder, fr *fwdResults) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("### Forwarder\n\nA peer's cell ends with its ratio to direct (medians of the per-slice ratios). The best peer is chosen slice by slice (the highest rate, the lowest latency, CPU or memory); the name is the one best in most slices.\n\n")
	w("%s", pathsHeader("case"))
	row := func(label, key string, f func(caseResult) float64, higher bool, prec int, how string) {
		pathsRow(b, label, func(t string) []float64 { return fr.per(key, t, f) }, higher, prec, how)
	}
	for _, c := range fcases {
		switch c.mode {
		case "bulk":
			row(c.label+": GB/s", c.key, gbps, true, 2, "ratio")
		default:
			row(c.label+": req/s", c.key, rps, true, 0, "ratio")
			row(c.label+": p50 ms", c.key, p50, false, 2, "diff")
			row(c.label+": p99 ms", c.key, p99, false, 2, "diff")
			row(c.label+": errors", c.key, errs, false, 0, "")
		}
	}
	cpuRow := func(label, key string, f func(caseResult) float64, prec int) {
		pathsRow(b, label, func(t string) []float64 {
			if t == direct {
				return nil
			}
			return fr.per(key, t, f)
		}, false, prec, "ratio")
	}
	cpuRow("forwarder CPU s per GB, 1 stream", "bulk1", cpuGB, 2)
	cpuRow("forwarder CPU s per GB, 8 streams", "bulk8", cpuGB, 2)
	cpuRow("forwarder CPU s per 10k connections (c=1)", "conn1", cpu10k, 2)
	cpuRow("forwarder CPU s per 10k connections (c=64)", "conn64", cpu10k, 2)
	cpuRow("forwarder CPU µs per request (keep-alive c=64)", "ka64", cpuPerReq, 1)
	memRow := func(label string, f func(t string) []float64) {
		pathsRow(b, label, func(t string) []float64 {
			if t == direct {
				return nil
			}
			return f(t)
		}, false, 1, "ratio")
	}
	fromMem := func(g func(memResult) int64) func(string) []float64 {
		return func(t string) []float64 {
			var xs []float64
			for _, r := range fr.mem[t] {
				xs = append(xs, float64(g(r))/mibF)
			}
			return xs
		}
	}
	fromKA := func(g func(caseResult) int64) func(string) []float64 {
		return func(t string) []float64 {
			return fr.per("ka64", t, func(r caseResult) float64 { return float64(g(r)) / mibF })
		}
	}
	memRow("RSS MiB, idle (fresh)", fromMem(func(r memResult) int64 { return r.idle.rss }))
	memRow("RSS MiB, 64 idle connections", fromMem(func(r memResult) int64 { return r.held.rss }))
	memRow("RSS MiB, 64 busy connections (max of 3 samples, keep-alive c=64)", fromKA(func(r caseResult) int64 { return r.busy.rss }))
	memRow("RSS MiB, idle 0.5 s after the keep-alive load", fromKA(func(r caseResult) int64 { return r.afterBusy.rss }))
	memRow("PSS MiB, idle (fresh)", fromMem(func(r memResult) int64 { return r.idle.pss }))
	memRow("PSS MiB, 64 idle connections", fromMem(func(r memResult) int64 { return r.held.pss }))
	memRow("PSS MiB, 64 busy connections", fromKA(func(r caseResult) int64 { return r.busy.pss }))
	for _, wc := range wrkCases {
		m := fr.wrk[wc.key]
		pathsRow(b, wc.label+": req/s with Debian's wrk -t2 (cross-check)", func(t string) []float64 { return m[t] }, true, 0, "ratio")
	}
	w("\nsocat's and nginx's CPU and memory are their whole tree: socat's listener and the children alive at the reading, and the CPU of children that exited (the listener's cutime and cstime); nginx's master and its %d workers. "+
		"RSS counts pages shared between processes once per process; PSS divides them. HAProxy is one process of %d threads. convex-shim's figures are the shim process alone (its child is an idle `sleep`).\n", runtime.NumCPU(), runtime.NumCPU())
	var kinds []string
	for _, c := range fcases {
		for _, t := range targets {
			agg := map[string]int64{}
			for _, r := range fr.cases[c.key][t] {
				for k, n := range r.load.ErrorKinds {
					agg[k] += n
				}
			}
			for k, n := range agg {
				kinds = append(kinds, fmt.Sprintf("%s, %s: %d × %s", c.label, t, n, k))
			}
		}
	}
	if len(kinds) > 0 {
		slices.Sort(kinds)
		w("Errors by kind, all rounds: %s.\n", strings.Join(kinds, "; "))
	}
	w("\n")
	cpuTable(b, fr)
}

// cpuTable shows where the CPU goes in each case: the load generator, the
// upstream and the forwarder, per request (or per GB), and how many of the
// machine's cores the three kept busy together.
func cpuTable(b *strings.Builder, fr *fwdResults) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("#### Where the CPU goes\n\nCPU time of each process over the whole run (warm-up included) divided by the requests (µs per request) or bytes (s per GB) of the whole run; "+
		"ksoftirqd is the kernel threads that take over loopback receive work when it piles up (no process is charged for it); "+
		"\"cores busy\" is all of it divided by the wall time of the run, the connecting before keep-alive and bulk runs left out (this machine has %d).\n\n", runtime.NumCPU())
	w("| case | path | load generator | upstream | forwarder | ksoftirqd | all | cores busy |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range fcases {
		per := func(r caseResult, cpu float64) float64 {
			if c.mode == "bulk" {
				return cpu / (float64(r.load.TotalBytes) / 1e9)
			}
			return cpu / float64(r.load.TotalRequests) * 1e6
		}
		unit, prec := " µs", 0
		if c.mode == "bulk" {
			unit, prec = " s/GB", 2
		}
		for _, t := range targets {
			col := func(f func(caseResult) float64) string { return cell(fr.per(c.key, t, f), prec) + unit }
			fw := col(func(r caseResult) float64 { return per(r, r.cpu) })
			if t == direct {
				fw = "—"
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.label, t,
				col(func(r caseResult) float64 { return per(r, r.loadCPU) }),
				col(func(r caseResult) float64 { return per(r, r.upCPU) }),
				fw,
				col(func(r caseResult) float64 { return per(r, r.softirq) }),
				col(func(r caseResult) float64 { return per(r, r.loadCPU+r.upCPU+r.cpu+r.softirq) }),
				cell(fr.per(c.key, t, func(r caseResult) float64 { return (r.loadCPU + r.upCPU + r.cpu + r.softirq) / r.wall }), 2))
		}
	}
	w("\n")
}

func signed(s string) string {
	if s == "—" || strings.HasPrefix(s, "-") {
		return s
	}
	return "+" + s
}

func initVerdicts(ir *initResults) []verdict {
	tini := ir.start["tini"]
	if median(ir.start["tini-static"]) < median(tini) {
		tini = ir.start["tini-static"]
	}
	var vs []verdict
	vs = append(vs, check("init: start to child within 2 ms of tini (the faster of tini, tini-static)", diff(ir.start["convex-shim"], tini), 2, " ms over tini", func(x float64) bool { return x <= 2 }))
	vs = append(vs, check("init: start to child within 1 ms of a minimal Go init (bench/mininit: the same signals, fork /bin/true)", diff(ir.start["convex-shim"], ir.minGo), 2, " ms over it", func(x float64) bool { return x <= 1 }))
	bi, err := describeBin(cfg.shim)
	v := verdict{target: "static binary ≤ 3 MiB stripped"}
	if err == nil {
		v.measured = fmt.Sprintf("%s bytes = %.2f MiB, %s, %s", num(float64(bi.size), 0), float64(bi.size)/mibF, staticWord(bi.static), strippedWord(bi.stripped))
		v.pass = bi.static && bi.stripped && bi.size <= 3<<20 // the budget release_test.go holds too
	}
	return append(vs, v)
}

func staticWord(s bool) string {
	if s {
		return "static"
	}
	return "dynamic"
}

func strippedWord(s bool) string {
	if s {
		return "stripped"
	}
	return "not stripped"
}

func initTable(b *strings.Builder, ir *initResults) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("### Init\n\nEach init runs as PID 1 of a fresh PID namespace, as in a container.\n\n")
	w("| | %s |\n|---|", strings.Join(names(ir.progs), " | "))
	for range ir.progs {
		w("---|")
	}
	w("\n")
	line := func(label string, f func(p initProg) string) {
		w("| %s |", label)
		for _, p := range ir.progs {
			w(" %s |", f(p))
		}
		w("\n")
	}
	line(fmt.Sprintf("start to child exit, `INIT -- /bin/true`, ms (median of %d runs per round; /bin/true alone: %s; the minimal Go init `bench/mininit`: %s)", cfg.startRuns, cell(ir.bare, 2), cell(ir.minGo, 2)),
		func(p initProg) string { return cell(ir.start[p.name], 2) })
	line("idle RSS with a sleeping child, MiB", func(p initProg) string {
		var xs []float64
		for _, m := range ir.rss[p.name] {
			xs = append(xs, float64(m.rss)/mibF)
		}
		return cell(xs, 2)
	})
	line("idle PSS, MiB", func(p initProg) string {
		var xs []float64
		for _, m := range ir.rss[p.name] {
			xs = append(xs, float64(m.pss)/mibF)
		}
		return cell(xs, 2)
	})
	line("binary size", func(p initProg) string {
		bi, err := describeBin(p.path)
		if err != nil {
			return "?"
		}
		return fmt.Sprintf("%s bytes, %s, %s", num(float64(bi.size), 0), staticWord(bi.static), strippedWord(bi.stripped))
	})
	line(fmt.Sprintf("SIGTERM to the child's handler running, µs (median of %d per round)", cfg.sigRuns), func(p initProg) string {
		return cell(ir.sig[p.name], 0)
	})
	line("signal the child gets", func(p initProg) string { return ir.sigs[p.name] })
	reap := func(label string, f func(reapResult) float64, prec int) {
		line(label, func(p initProg) string {
			var xs []float64
			for _, r := range ir.reap[p.name] {
				xs = append(xs, f(r))
			}
			if len(xs) == 0 {
				return "same reaper"
			}
			return cell(xs, prec)
		})
	}
	reap("10,000 orphans: start to all reaped, s", func(r reapResult) float64 { return r.total.Seconds() }, 2)
	reap("10,000 orphans: last fork to all reaped, ms", func(r reapResult) float64 { return float64(r.tail) / 1e6 }, 1)
	reap("10,000 orphans: unreaped at the last fork", func(r reapResult) float64 { return float64(r.backlog) }, 0)
	reap("10,000 orphans: the init's CPU, s", func(r reapResult) float64 { return r.cpu }, 2)
	w("\nThe orphans come from `/bin/sh -c` (dash): 1,000 subshells each start ten background `true` and exit at once, " +
		"so the producer's forking sets the pace and the tail shows whether the init keeps up. " +
		"The SIGTERM latency child is a Go program (`runner sigchild`) that timestamps the signal with CLOCK_MONOTONIC; the runner takes its own timestamp just before kill(2).\n\n")
}

func names(ps []initProg) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.name)
	}
	return out
}

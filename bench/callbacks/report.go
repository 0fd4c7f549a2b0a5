package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/convex-shim/convex-shim/bench/internal/benchenv"
)

// targetRatio is issue 12's target: callbacks through the shim at least
// 0.95x direct, in callbacks/s and in p50.
const targetRatio = 0.95

type machineInfo struct {
	date              time.Time
	cores             int
	cpu, kernel       string
	loadStart         string
	loadEnd           string
	versions          []string
	began             time.Time
	rounds, n, cn, st int
}

func machine(c *config) *machineInfo {
	m := &machineInfo{date: time.Now().UTC(), began: time.Now(), cores: runtime.NumCPU(), loadStart: benchenv.Loadavg(),
		cpu: benchenv.CPUModel(), kernel: benchenv.Kernel(),
		rounds: c.rounds, n: c.client.N, cn: c.client.CN, st: c.client.Storage}
	for _, v := range []struct{ name, bin string }{{"", c.shim}, {"Node ", c.node}} {
		if out, err := exec.Command(v.bin, "--version").Output(); err == nil {
			m.versions = append(m.versions, v.name+strings.TrimPrefix(strings.TrimSpace(string(out)), "v"))
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "socat").Output(); err == nil {
		m.versions = append(m.versions, "socat "+string(out))
	}
	m.versions = append(m.versions, runtime.Version()+" (stand-in backend, edge)")
	return m
}

// modes are client.cjs's measurements, in table order.
var modes = []struct{ key, title, unit string }{
	{"sequential", "Sequential callbacks (`/api/actions/query`, back to back)", "callbacks/s"},
	{"concurrent", "16 concurrent callbacks", "callbacks/s"},
	{"store", "`ctx.storage.store()` of 1 MiB (upload-URL callback, then a 1 MiB POST)", "stores/s"},
	{"get", "`ctx.storage.get()` of 1 MiB (get-URL callback, then a 1 MiB GET)", "gets/s"},
}

// series is one origin's figures for one mode over the rounds, with the
// ratios to direct of the same round. pace is direct's p50 over this p50:
// like the rate ratio, above 1 is faster than direct.
type series struct {
	rate, p50, p99, rateX, paceX []float64
	failed                       string
}

func collect(runs []Run, originKey, modeKey string) series {
	var s series
	direct := map[int]mode{}
	for _, r := range runs {
		if r.Origin == "direct" {
			direct[r.Round] = r.Client.Modes[modeKey]
		}
	}
	for _, r := range runs {
		if r.Origin != originKey {
			continue
		}
		if !r.Client.OK {
			s.failed = r.Client.Error
			continue
		}
		m := r.Client.Modes[modeKey]
		s.rate, s.p50, s.p99 = append(s.rate, m.Rate), append(s.p50, m.P50), append(s.p99, m.P99)
		if d, ok := direct[r.Round]; ok && d.Rate > 0 && m.P50 > 0 {
			s.rateX = append(s.rateX, m.Rate/d.Rate)
			s.paceX = append(s.paceX, d.P50/m.P50)
		}
	}
	return s
}

func count(v float64) string { return benchenv.Num(v, 0) }

func ratio(v float64) string { return fmt.Sprintf("%.2f×", v) }

func verdict(v float64) string {
	if v >= targetRatio {
		return "PASS"
	}
	return "MISS"
}

func report(c *config, m *machineInfo, runs []Run) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Node callbacks: real Node `fetch`, through every path to the backend\n\n")
	p("Machine: %s, %d cores, Linux %s; %s. %s UTC, load average %s at start and %s at end "+
		"(figures are only worth keeping near 0), %.0f s. Command: `%s` (this section: `bench/callbacks/bench.sh`).\n\n",
		m.cpu, m.cores, m.kernel, strings.Join(m.versions, ", "), m.date.Format("2006-01-02 15:04"),
		m.loadStart, m.loadEnd, time.Since(m.began).Seconds(), c.command)
	p("`bench/callbacks/client.cjs` makes callbacks as upstream's Node executor does (get-convex/convex-backend "+
		"94a42c3): it first replaces `process.env` with the executor's allowlist (executor.ts l.101–131), then calls "+
		"the bare global `fetch` on `new URL(\"/api/actions/query\", origin)` with the `Convex-Action-Callback-Token` "+
		"header and a small JSON body (syscalls.ts l.292–301), on undici's default keep-alive pool; storage is the "+
		"URL callback and then the 1 MiB POST or GET of syscalls.ts l.995 and l.1038. The backend is a Go stand-in on "+
		"127.0.0.1:3210 (HTTP/1.1 keep-alive) answering like upstream's callback and storage routes. Per run: %d "+
		"unmeasured callbacks, %d sequential, %d made 16 at a time, %d stores and %d gets. Every origin runs once per "+
		"round, in an order rotated each round; %d rounds, medians with (min–max), ratios to direct taken within each round. "+
		"Each run is checked: the backend answered exactly the requests Node saw answered, and on the hairpin path the "+
		"edge carried every one. Everything runs in a private network namespace with lo alone and no DNS, as in a "+
		"container whose public name does not resolve inside.\n\n",
		c.client.Warm, m.n, m.cn, m.st, m.st, m.rounds)

	p("Origins:\n\n")
	for _, o := range origins {
		p("- **%s**: %s\n", o.key, o.label)
	}
	p("\n")

	// The targets first, with the hairpin edge and the other paths beside them.
	p("### Target: through the shim at least %.2f× direct, in callbacks/s and in p50\n\n", targetRatio)
	p("Ratios to direct in the same round, median over the rounds; for p50, direct's p50 over the origin's (above 1 is faster). ")
	p("The hairpin edge (the stock image with a public origin it can reach) and the paths without a target are beside them.\n\n")
	cols := []string{"shim-loopback", "shim-public", "hairpin", "shim-forwarder", "socat"}
	p("| mode | measure | shim-loopback | shim-public | hairpin (stock) | shim-forwarder | socat |\n|---|---|---|---|---|---|---|\n")
	pass := map[string]bool{"shim-loopback": true, "shim-public": true}
	for _, md := range modes {
		for _, meas := range []string{md.unit, "p50"} {
			p("| %s | %s |", md.key, meas)
			for _, k := range cols {
				s := collect(runs, k, md.key)
				xs := s.rateX
				if meas == "p50" {
					xs = s.paceX
				}
				if len(xs) == 0 {
					p(" fails |")
					pass[k] = false
					continue
				}
				v := benchenv.Median(xs)
				if _, ok := pass[k]; ok {
					if v < targetRatio {
						pass[k] = false
					}
					p(" %s %s |", ratio(v), verdict(v))
				} else {
					p(" %s |", ratio(v))
				}
			}
			p("\n")
		}
	}
	p("\n")
	for _, k := range []string{"shim-loopback", "shim-public"} {
		if pass[k] {
			p("- **%s**: PASS, at least %.2f× direct in every mode and measure.\n", k, targetRatio)
		} else {
			p("- **%s**: MISS, below %.2f× direct in at least one mode or measure above.\n", k, targetRatio)
		}
	}
	p("\n")

	for _, md := range modes {
		p("### %s\n\n", md.title)
		p("| origin | %s | × direct | p50 | × direct (pace) | p99 |\n|---|---|---|---|---|---|\n", md.unit)
		for _, o := range origins {
			s := collect(runs, o.key, md.key)
			if len(s.rate) == 0 {
				why := s.failed
				if o.expectFail {
					why += ", as upstream #386: the name does not resolve inside"
				}
				p("| %s | fails: %s | — | — | — | — |\n", o.key, why)
				continue
			}
			rx, px := "1.00×", "1.00×"
			if o.key != "direct" {
				rx, px = benchenv.Cell(s.rateX, ratio), benchenv.Cell(s.paceX, ratio)
			}
			p("| %s | %s | %s | %s µs | %s | %s µs |\n", o.key, benchenv.Cell(s.rate, count), rx, benchenv.Cell(s.p50, count), px, benchenv.Cell(s.p99, count))
		}
		p("\n")
	}
	p("What limits each figure: **direct** is Node's undici and the stand-in backend sharing the 2 cores, nothing between them. " +
		"With the preload on (**shim-loopback**, **shim-public**) Node's sockets go to 127.0.0.1:3210 exactly as direct's do; what " +
		"the shim adds is the preload's URL check in each `fetch` call, so these ratios measure that check and the machine's noise. " +
		"**shim-forwarder** and **socat** add a user-space hop on port 80 (two more loopback sockets and the forwarder's CPU " +
		"on the same cores) per request. **hairpin** adds TLS and the edge's 2 ms each way to every request, so its sequential " +
		"rate cannot pass about 250/s whatever the path costs; it is the stock image's best case for a public origin, " +
		"with the hairpin working.\n\n")
	return b.String()
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// exitCheckFailed is --check's code when any route does not answer.
const exitCheckFailed = 1

// checkTimeout bounds each probe. Docker's HEALTHCHECK default timeout is
// 30 s and a Kubernetes probe's 1 s is raised in the examples; a healthy
// backend answers /version in milliseconds.
const checkTimeout = 3 * time.Second

// runCheck prints the routing table and probes every forward end to end,
// GET /version through its listen address, as a Node action's callback
// would travel, and every route of the fetch preload at its target. It
// needs no curl in the image, so it serves as a Docker HEALTHCHECK and a
// Kubernetes exec probe.
func runCheck(c config, out io.Writer) int {
	routes := c.forwards
	if len(routes) == 0 {
		// No forwards: still say whether the backend itself answers.
		routes = []forwardSpec{{listen: fmt.Sprintf("127.0.0.1:%d", apiPort), target: "-", from: "backend (no forwards)"}}
	}
	rows := [][]string{{"LISTEN", "TARGET", "FROM", "CHECK"}}
	failed := 0
	for _, f := range routes {
		result := "ok"
		if err := probe(f); err != nil {
			var skip skipError
			if errors.As(err, &skip) {
				result = "skipped: " + err.Error()
			} else {
				result, failed = "FAIL: "+err.Error(), failed+1
			}
		}
		rows = append(rows, []string{f.listen, f.target, f.from, result})
	}
	// The fetch preload's routes: Node's calls to an origin go straight to
	// the backend's port, so the probe goes there too.
	for _, r := range c.nodeRoutes {
		target := strings.TrimPrefix(r.To, "http://")
		_, port, _ := net.SplitHostPort(target)
		result := "ok"
		if err := getVersion(target, port == strconv.Itoa(apiPort)); err != nil {
			result, failed = "FAIL: "+err.Error(), failed+1
		}
		rows = append(rows, []string{"fetch " + redactOrigin(r.From), target, r.Env + " (node preload)", result})
	}
	printTable(out, rows)
	for _, n := range c.notices {
		if !n.debug {
			fmt.Fprintln(out, "note:", n.text)
		}
	}
	if failed > 0 {
		fmt.Fprintf(out, "%d of %d routes failed\n", failed, len(rows)-1)
		return exitCheckFailed
	}
	return 0
}

// skipError marks an optional route whose address does not exist here.
type skipError struct{ error }

func probe(f forwardSpec) error {
	// The target first: if the backend refuses, the forwarder would hold
	// the probe for --dial-retry; say plainly that the backend is down.
	if f.target != "-" {
		c, err := net.DialTimeout("tcp", f.target, checkTimeout)
		if err != nil {
			return fmt.Errorf("backend at %s: %w", f.target, bare(err))
		}
		c.Close()
	}
	// The API answers /version with 200. Anything else (the site port, a
	// custom target) may route /version to user code and answer 404: any
	// HTTP response there proves the path works end to end.
	_, port, _ := net.SplitHostPort(f.target)
	err := getVersion(f.listen, f.target == "-" || port == strconv.Itoa(apiPort))
	if f.optional && isAddrMissing(err) {
		return skipError{err}
	}
	return err
}

// getVersion does GET /version over HTTP/1.1 by hand, reading only the
// status line. Not net/http: its client links crypto/tls and HTTP/2 for a
// probe that needs neither, and a program that only calls http.Get is
// 5.8 MB stripped, twice the shim's 3 MiB budget.
func getVersion(addr string, want200 bool) error {
	c, err := net.DialTimeout("tcp", addr, checkTimeout)
	if err != nil {
		return fmt.Errorf("connect %s: %w (is convex-shim running in this network namespace?)", addr, bare(err))
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(checkTimeout))
	if _, err := fmt.Fprintf(c, "GET /version HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return fmt.Errorf("GET http://%s/version: %w", addr, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("GET http://%s/version: no response: %w", addr, err)
	}
	// "HTTP/1.1 200 OK"
	if f := strings.Fields(line); len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") || (want200 && f[1] != "200") {
		return fmt.Errorf("GET http://%s/version: %s", addr, strings.TrimSpace(line))
	}
	return nil
}

// bare drops net.OpError's repetition of the address the caller names.
func bare(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// printTable aligns columns two spaces apart; the last column is not padded.
func printTable(out io.Writer, rows [][]string) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

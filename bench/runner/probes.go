package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The behaviour probes run with the bench upstream stopped: each probe puts
// its own upstream (or none) on 127.0.0.1:3210.

type probe struct {
	key, label string
	extra      []string // more convex-shim flags
	targets    []string
	limit      time.Duration // how long the client waits for an answer
	run        func(p probe, target string) string
}

var probes = []probe{
	{"down", "upstream down (client waits up to 3 s)", nil, targets, 3 * time.Second, probeDown},
	{"down2", "upstream down, convex-shim --dial-retry 2s (client waits up to 5 s)", []string{"--dial-retry", "2s"}, []string{shimT}, 5 * time.Second, probeDown},
	{"late", "upstream late: listens 1 s after the client connected and sent", nil, targets, 5 * time.Second, probeLate},
	{"halfclose", "half-close: client sends, shuts its write side; 1 MiB response comes 2 s later", nil, targets, 6 * time.Second, probeHalfClose},
}

// probeResults are [probe key][target] descriptions.
type probeResults map[string]map[string]string

func runProbes() (probeResults, error) {
	res := probeResults{}
	// The process's first connect pays Go's one-time network setup; keep
	// that out of the first probe's timing.
	if c, err := net.DialTimeout("tcp", upstreamAddr, time.Second); err == nil {
		c.Close()
	}
	for _, p := range probes {
		res[p.key] = map[string]string{}
		for _, t := range p.targets {
			var f *fwd
			if t != direct {
				var err error
				if f, err = startFwd(t, p.extra...); err != nil {
					return nil, fmt.Errorf("probe %s, %s: %w", p.key, t, err)
				}
			}
			res[p.key][t] = p.run(p, t)
			if f != nil {
				f.stop()
			}
			progress("probe  %-60s %-12s %s", p.label, t, res[p.key][t])
		}
	}
	return res, nil
}

func probeDown(p probe, target string) string {
	return exchange(addrOf(target), false, p.limit, 0).String()
}

func probeLate(p probe, target string) string {
	stop := serveAt(time.Now().Add(time.Second), 0, version)
	defer stop()
	return exchange(addrOf(target), false, p.limit, 0).String()
}

func probeHalfClose(p probe, target string) string {
	stop := serveAt(time.Now(), 2*time.Second, string(make([]byte, 1<<20)))
	defer stop()
	return exchange(addrOf(target), true, p.limit, 1<<20).String()
}

const version = "unknown-bench-backend\n"

// serveAt listens on the upstream address at the given time (at once, before
// it returns, if that time has come) and answers each request after delay
// with body, then closes the connection. stop closes the listener and every
// connection.
func serveAt(at time.Time, delay time.Duration, body string) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", upstreamAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe upstream:", err)
			return nil
		}
		return ln
	}
	var ln net.Listener
	if !time.Now().Before(at) {
		ln = listen()
	}
	go func() {
		defer close(done)
		if ln == nil {
			select {
			case <-time.After(time.Until(at)):
			case <-quit:
				return
			}
			if ln = listen(); ln == nil {
				return
			}
		}
		go func() { <-quit; ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				select {
				case <-time.After(delay):
				case <-quit:
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	return func() { close(quit); <-done }
}

// outcome is what a probing client saw.
type outcome struct {
	dialErr error
	resp    []byte
	readErr error // nil: EOF
	at      time.Duration
	want    int // body length expected, 0 for the /version body
}

// exchange connects, sends GET /version (shutting down its write side with
// halfClose) and reads until EOF, an error or limit.
func exchange(addr string, halfClose bool, limit time.Duration, want int) outcome {
	o := outcome{want: want}
	if want == 0 {
		o.want = len(version)
	}
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		o.dialErr, o.at = err, time.Since(t0)
		return o
	}
	defer c.Close()
	c.SetDeadline(t0.Add(limit))
	c.Write([]byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	o.resp, err = io.ReadAll(c)
	o.at = time.Since(t0)
	if err != nil {
		o.readErr = err
	}
	return o
}

func (o outcome) String() string {
	at := func() string {
		if o.at < 10*time.Millisecond {
			return fmt.Sprintf("%.1f ms", float64(o.at)/1e6)
		}
		if o.at < time.Second {
			return fmt.Sprintf("%.0f ms", float64(o.at)/1e6)
		}
		return fmt.Sprintf("%.2f s", o.at.Seconds())
	}()
	switch {
	case o.dialErr != nil && errors.Is(o.dialErr, syscall.ECONNREFUSED):
		return "connection refused after " + at
	case o.dialErr != nil:
		return fmt.Sprintf("connect failed after %s: %v", at, o.dialErr)
	}
	body := -1
	if i := bytes.Index(o.resp, []byte("\r\n\r\n")); i >= 0 && bytes.HasPrefix(o.resp, []byte("HTTP/1.1 200 ")) {
		body = len(o.resp) - i - 4
	}
	what := ""
	switch {
	case body == o.want:
		what = fmt.Sprintf("whole response (%s) after %s", size(o.want), at)
	case len(o.resp) == 0:
		what = "no byte"
	case body >= 0:
		what = fmt.Sprintf("partial response (%d of %d body bytes)", body, o.want)
	default:
		what = fmt.Sprintf("%d bytes, not a response", len(o.resp))
	}
	switch {
	case o.readErr == nil && body == o.want:
		return what
	case o.readErr == nil:
		return what + ", then closed (EOF) after " + at
	case errors.Is(o.readErr, os.ErrDeadlineExceeded):
		return what + ", connection still open at " + at
	case errors.Is(o.readErr, syscall.ECONNRESET):
		return what + ", then reset after " + at
	}
	return fmt.Sprintf("%s, then %v after %s", what, o.readErr, at)
}

func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

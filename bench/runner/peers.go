package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// The peers convex-shim's forwarder is measured against besides socat:
// Debian's HAProxy and nginx's stream module, configured as a careful
// operator would for a loopback TCP forward: one thread or worker per core,
// TCP mode, splicing where the proxy has it (HAProxy; nginx's stream module
// has none), no timeout shorter than the 1800 s a V8 action may run (Node
// actions 600 s), logging off, and room for the 9,000 held connections of
// the scale cases.
const (
	haproxyT = "haproxy"
	nginxT   = "nginx"
)

// peerConns is HAProxy's connection limit: above the largest scale case
// (9,000 held plus 64 churning). HAProxy refuses to start unless the
// descriptor limit covers two per connection and two per splice pipe
// (maxconn/4 pipes unless told), and the hard limit here is 20,000: so
// 9,100 connections and 800 pipes, which covers the 8 bulk streams many
// times over. nginx counts each side as a connection, in each worker: it
// gets twice as many, and its descriptor limit just under the hard limit.
const (
	peerConns    = 9100
	peerPipes    = 800
	nginxConns   = 2 * peerConns
	nginxNoFiles = 19900
)

func haproxyConfig() string {
	return fmt.Sprintf(`global
	nbthread %d
	maxconn %d
	maxpipes %d
defaults
	mode tcp
	option splice-auto
	maxconn %d
	timeout connect 60s
	timeout client 1800s
	timeout server 1800s
	timeout client-fin 1800s
	timeout server-fin 1800s
	timeout tunnel 1800s
frontend fwd
	bind 127.0.0.1:%d
	default_backend upstream
backend upstream
	server backend %s
`, runtime.NumCPU(), peerConns, peerPipes, peerConns, portOf(haproxyT), upstreamAddr)
}

func nginxConfig(dir string) string {
	return fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes %d;
worker_rlimit_nofile %d;
pid %s;
error_log stderr crit;
events {
	worker_connections %d;
}
stream {
	server {
		listen 127.0.0.1:%d reuseport;
		proxy_pass %s;
		proxy_connect_timeout 60s;
		proxy_timeout 1800s;
	}
}
`, runtime.NumCPU(), nginxNoFiles, filepath.Join(dir, "nginx.pid"), nginxConns, portOf(nginxT), upstreamAddr)
}

// peerCommand writes target's configuration into a fresh directory and
// returns its command line, the directory (the caller removes it), and
// whether its CPU and memory are a process tree (nginx's master and workers).
func peerCommand(target string) (argv []string, dir string, tree bool, err error) {
	dir, err = os.MkdirTemp("", "bench-"+target+"-")
	if err != nil {
		return nil, "", false, err
	}
	conf := filepath.Join(dir, target+".conf")
	switch target {
	case haproxyT:
		// -db: foreground, no daemon; no log line in the configuration:
		// nothing is logged.
		return []string{"haproxy", "-db", "-f", conf}, dir, false, os.WriteFile(conf, []byte(haproxyConfig()), 0o644)
	case nginxT:
		return []string{"nginx", "-p", dir, "-e", "stderr", "-c", conf}, dir, true, os.WriteFile(conf, []byte(nginxConfig(dir)), 0o644)
	}
	os.RemoveAll(dir)
	return nil, "", false, fmt.Errorf("no peer %s", target)
}

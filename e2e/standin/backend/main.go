// Command convex-local-backend is a test stand-in for the self-hosted Convex backend binary
// of the same name. It copies the behaviour that matters to convex-shim, as described in
// docs/convex-facts.md (cited below as "facts §N"), and nothing else:
//
//   - it listens on 0.0.0.0:3210 (API) and 0.0.0.0:3211 (site proxy) only after a startup
//     delay (facts §3, §7);
//   - it handles only SIGINT: the first drains and exits 0, a second exits 1 at once; every
//     other signal keeps its default action (facts §4);
//   - its Node server is a child in its own process group, reached over a Unix socket, and
//     calls back to whatever host:port --convex-origin names (facts §1, §5);
//   - the Node server inherits its environment unchanged, NODE_OPTIONS included, must be up
//     within 5 s or the action fails, and gets the action's variables (CONVEX_CLOUD_URL,
//     CONVEX_SITE_URL) to put in process.env in place of its own (facts §11).
//
// Typical use: built by ../build.sh into an image whose run_backend.sh execs it with the real
// script's arguments (--port 3210 --site-proxy-port 3211 --convex-origin ... --convex-site ...).
//
// Environment:
//
//	STANDIN_STARTUP_DELAY  time before listening and before SIGINT is handled (Go duration, default 1s)
//	STANDIN_DRAIN_DELAY    extra time a SIGINT drain takes before exiting (default 0)
//	STANDIN_EXIT_CODE      if set, exit with this code right after the startup delay, without
//	                       listening, like a fatal database error at startup (facts §6)
//	STANDIN_SIGNAL_LOG     file to which each received signal is appended as "backend SIGNAME"
//	                       (default /convex/data/signals.log); the Node server appends "node SIGNAME"
//	STANDIN_NODE_SCRIPT    the Node server script (default /convex/node/local.cjs)
//	STANDIN_RETRY_BASE_MS  read by the Node server: base of its callback retry backoff
//	TMPDIR                 where the Node server's Unix socket goes (run_backend.sh sets it)
//
// Test-only routes on 3210: POST /test/node-action, GET /test/node-pid, POST /test/exit?code=N,
// POST /test/abort, POST /test/orphans?n=N&life=D. It has no database, no WebSocket sync and no real functions.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/convex-shim/convex-shim/internal/sigdisp"
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("convex-local-backend: ")
	os.Exit(run(os.Args[1:]))
}

type config struct {
	port, sitePort int
	origin, site   string
	startupDelay   time.Duration
	drainDelay     time.Duration
	exitCode       string
	signalLog      string
	nodeScript     string
}

func parseConfig(args []string) (config, error) {
	c := config{
		port:       3210,
		sitePort:   3211,
		signalLog:  envOr("STANDIN_SIGNAL_LOG", "/convex/data/signals.log"),
		nodeScript: envOr("STANDIN_NODE_SCRIPT", "/convex/node/local.cjs"),
		exitCode:   os.Getenv("STANDIN_EXIT_CODE"),
	}
	// The real script puts "$@" (the docker run arguments) before its own flags, so unknown
	// arguments are expected: log them and go on rather than fail.
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimPrefix(args[i], "--"), "=")
		known := strings.HasPrefix(args[i], "--") &&
			(name == "port" || name == "site-proxy-port" || name == "convex-origin" || name == "convex-site")
		if !known {
			log.Printf("ignoring argument %q", args[i])
			continue
		}
		if !hasVal {
			if i+1 == len(args) {
				return c, fmt.Errorf("parse flag --%s: missing value", name)
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "port":
			c.port, err = strconv.Atoi(val)
		case "site-proxy-port":
			c.sitePort, err = strconv.Atoi(val)
		case "convex-origin":
			c.origin = strings.TrimRight(val, "/")
		case "convex-site":
			c.site = val
		}
		if err != nil {
			return c, fmt.Errorf("parse flag --%s %q: %w", name, val, err)
		}
	}
	var err error
	if c.startupDelay, err = envDuration("STANDIN_STARTUP_DELAY", time.Second); err != nil {
		return c, err
	}
	if c.drainDelay, err = envDuration("STANDIN_DRAIN_DELAY", 0); err != nil {
		return c, err
	}
	return c, nil
}

func run(args []string) int {
	// Subscribe before anything else so that every signal is logged, even during startup.
	// Handling a signal here does not change what it does: apart from SIGINT after startup
	// and SIGUSR1, each is given its default action by dieBy (facts §4).
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT)

	c, err := parseConfig(args)
	if err != nil {
		log.Print(err)
		return 2
	}
	b := newBackend(c)
	log.Printf("starting up (pid %d, origin %q, startup delay %s)", os.Getpid(), c.origin, c.startupDelay)

	// Startup (database connect, migrations in the real one): SIGINT has no handler yet, so a
	// SIGINT now kills a non-PID-1 backend outright (facts §4).
	startup := time.After(c.startupDelay)
	for started := false; !started; {
		select {
		case s := <-sigs:
			b.recordSignal(s)
			if s != syscall.SIGUSR1 {
				dieBy(s)
			}
		case <-startup:
			started = true
		}
	}
	if c.exitCode != "" {
		code, err := strconv.Atoi(c.exitCode)
		if err != nil {
			log.Printf("parse STANDIN_EXIT_CODE %q: %v", c.exitCode, err)
			return 2
		}
		log.Printf("exiting with STANDIN_EXIT_CODE=%d", code)
		return code
	}

	// IPv4 only, on all interfaces, like the real script's fixed ports (facts §3).
	apiLn, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", c.port))
	if err != nil {
		log.Printf("listen api: %v", err)
		return 1
	}
	siteLn, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", c.sitePort))
	if err != nil {
		log.Printf("listen site proxy: %v", err)
		return 1
	}
	api := &http.Server{Handler: b.routes()}
	site := &http.Server{Handler: siteProxy(c.port)}
	go serve(api, apiLn)
	go serve(site, siteLn)
	log.Printf("listening on %s (api) and %s (site proxy)", apiLn.Addr(), siteLn.Addr())

	drained := make(chan struct{})
	shuttingDown := false
	for {
		select {
		case s := <-sigs:
			b.recordSignal(s)
			switch {
			case s == syscall.SIGUSR1:
				// The real backend has a no-op handler for it.
			case s != syscall.SIGINT:
				dieBy(s)
			case shuttingDown:
				log.Print("Forcibly shutting down!")
				return 1
			default:
				shuttingDown = true
				log.Print("shutting down")
				go func() {
					b.drain(api, site)
					close(drained)
				}()
			}
		case <-drained:
			log.Print("shutdown complete")
			return 0
		}
	}
}

func serve(s *http.Server, ln net.Listener) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("serve %s: %v", ln.Addr(), err)
	}
}

// drain stops accepting, waits for every in-flight request with no deadline (a Node action may
// run 600 s, facts §9), then drops the Node server as the real backend does when it exits.
func (b *backend) drain(servers ...*http.Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(context.Background()); err != nil {
				log.Printf("shutdown: %v", err)
			}
		}()
	}
	wg.Wait()
	if b.cfg.drainDelay > 0 {
		log.Printf("draining for another %s (STANDIN_DRAIN_DELAY)", b.cfg.drainDelay)
		time.Sleep(b.cfg.drainDelay)
	}
	b.node.kill()
}

// dieBy gives s the default action it would have in the real backend, which does not handle
// it: the kernel drops such a signal sent to PID 1 (why `docker stop` times out on the stock
// image, facts §4), and anything else dies by it. Go cannot be left to do this itself: a Go
// program that is PID 1 exits 2 on an unhandled SIGTERM, and dumps goroutines on SIGQUIT.
func dieBy(s os.Signal) {
	sig, ok := s.(syscall.Signal)
	if !ok || os.Getpid() == 1 {
		return
	}
	if err := sigdisp.Set(sig, sigdisp.Default); err != nil {
		log.Printf("%v", err)
	}
	// A signal a process sends itself is delivered before kill returns.
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		log.Printf("kill self with %v: %v", sig, err)
	}
}

type backend struct {
	cfg   config
	token string // the Convex-Action-Callback-Token the Node server must send back
	node  *nodeServer

	logMu sync.Mutex

	mu      sync.Mutex
	uploads map[string]bool   // unused upload tokens
	files   map[string][]byte // storage id -> bytes
}

func newBackend(c config) *backend {
	return &backend{
		cfg:     c,
		token:   randomHex(16),
		node:    &nodeServer{script: c.nodeScript},
		uploads: map[string]bool{},
		files:   map[string][]byte{},
	}
}

// recordSignal appends "backend SIGNAME" to the signal log and fsyncs it before the signal is
// acted on, so a test can count signals even when the signal ends the process.
func (b *backend) recordSignal(s os.Signal) {
	name := signalName(s)
	log.Printf("received %s", name)
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if err := appendSync(b.cfg.signalLog, "backend "+name+"\n"); err != nil {
		log.Printf("record %s: %v", name, err)
	}
}

func appendSync(path, line string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(line)
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(werr, serr, cerr)
}

func signalName(s os.Signal) string {
	names := map[os.Signal]string{
		syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGQUIT: "SIGQUIT",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return s.String()
}

func (b *backend) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "unknown") // official builds, facts §7
	})
	mux.HandleFunc("GET /instance_name", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, envOr("INSTANCE_NAME", "convex-self-hosted"))
	})
	mux.HandleFunc("POST /api/actions/{op}", b.handleCallback)
	mux.HandleFunc("POST /api/storage/upload", b.handleUpload)
	mux.HandleFunc("GET /api/storage/{id}", b.handleDownload)
	mux.HandleFunc("/http/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "http action %s %s\n", r.Method, strings.TrimPrefix(r.URL.Path, "/http"))
	})
	mux.HandleFunc("POST /test/node-action", b.handleNodeAction)
	mux.HandleFunc("GET /test/node-pid", func(w http.ResponseWriter, r *http.Request) {
		pid := b.node.pid()
		if pid == 0 {
			http.Error(w, "node server not running", http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "%d\n", pid)
	})
	mux.HandleFunc("POST /test/exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil {
			http.Error(w, fmt.Sprintf("parse code %q: %v", r.URL.Query().Get("code"), err), http.StatusBadRequest)
			return
		}
		// No drain and no Node cleanup: the Node server may outlive the backend (facts §5).
		b.exitAfterReply(w, func() {
			log.Printf("exiting with code %d (POST /test/exit)", code)
			os.Exit(code)
		})
	})
	mux.HandleFunc("POST /test/abort", func(w http.ResponseWriter, r *http.Request) {
		// Release builds abort on panic (facts §6): die by SIGABRT, 128+6 = 134.
		b.exitAfterReply(w, func() {
			log.Print("aborting (POST /test/abort)")
			dieBy(syscall.SIGABRT)
			// Only reached as PID 1, where the kernel drops SIGABRT; report it the usual way.
			os.Exit(128 + int(syscall.SIGABRT))
		})
	})
	mux.HandleFunc("POST /test/orphans", handleOrphans)
	return mux
}

// handleOrphans leaves n orphans behind, as the real backend's tree can (Node server, npm,
// user code; facts §5): each is a `sleep` whose parent shell exits at once, so the sleep is
// re-parented to PID 1 (or the nearest subreaper) and becomes a zombie when it ends unless
// that process reaps it. ?n= how many (default 1, at most 100), ?life= how long each lives
// (Go duration, default 200ms). The reply lists their pids: {"pids":[...]}.
func handleOrphans(w http.ResponseWriter, r *http.Request) {
	n, life := 1, 200*time.Millisecond
	var err error
	if v := r.URL.Query().Get("n"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 100 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("n=%q: want 1..100", v)})
			return
		}
	}
	if v := r.URL.Query().Get("life"); v != "" {
		if life, err = time.ParseDuration(v); err != nil || life < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("life=%q: want a Go duration", v)})
			return
		}
	}
	secs := strconv.FormatFloat(life.Seconds(), 'f', 3, 64)
	pids := []int{}
	for range n {
		// The sleep's output goes nowhere, so Output returns when the shell exits.
		out, err := exec.Command("sh", "-c", `sleep "$1" </dev/null >/dev/null 2>&1 & echo $!`, "sh", secs).Output()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "orphan: " + err.Error()})
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": fmt.Sprintf("orphan pid %q: %v", out, err)})
			return
		}
		pids = append(pids, pid)
	}
	log.Printf("left %d orphans (%s each): %v", n, life, pids)
	writeJSON(w, http.StatusOK, map[string][]int{"pids": pids})
}

// exitAfterReply answers 202 and then runs exit, so the caller learns the request was taken.
func (b *backend) exitAfterReply(w http.ResponseWriter, exit func()) {
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusAccepted)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go func() {
		time.Sleep(100 * time.Millisecond) // let the reply leave before the process ends
		exit()
	}()
}

// callbackRequest is the body the Node server sends; Delay lets a test keep a callback in
// flight while the backend drains.
type callbackRequest struct {
	Args      json.RawMessage `json:"args"`
	StorageID string          `json:"storageId"`
	Delay     string          `json:"delay"`
}

var callbackOps = map[string]bool{
	"query": true, "mutation": true, "action": true, "schedule_job": true, "cancel_job": true,
	"vector_search": true, "storage_generate_upload_url": true, "storage_get_url": true,
	"storage_get_metadata": true, "storage_delete": true, "audit_log": true,
	"create_function_handle": true, "create_service_token": true,
}

func (b *backend) handleCallback(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	if !callbackOps[op] {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown op " + op})
		return
	}
	if r.Header.Get("Convex-Action-Callback-Token") != b.token {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong Convex-Action-Callback-Token"})
		return
	}
	var req callbackRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode " + op + " body: " + err.Error()})
		return
	}
	delay := r.URL.Query().Get("delay")
	if req.Delay != "" {
		delay = req.Delay
	}
	if delay != "" {
		d, err := time.ParseDuration(delay)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("parse delay %q: %v", delay, err)})
			return
		}
		log.Printf("callback %s: sleeping %s", op, d)
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	log.Printf("callback %s", op)

	var value any
	b.mu.Lock()
	switch op {
	case "storage_generate_upload_url":
		tok := randomHex(16)
		b.uploads[tok] = true
		value = b.cfg.origin + "/api/storage/upload?token=" + tok
	case "storage_get_url":
		if _, ok := b.files[req.StorageID]; ok {
			value = b.cfg.origin + "/api/storage/" + req.StorageID
		}
	case "storage_get_metadata":
		if data, ok := b.files[req.StorageID]; ok {
			value = map[string]any{"storageId": req.StorageID, "size": len(data)}
		}
	case "storage_delete":
		if _, ok := b.files[req.StorageID]; !ok {
			b.mu.Unlock()
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "storage_delete: no file " + req.StorageID})
			return
		}
		delete(b.files, req.StorageID)
	case "schedule_job", "create_service_token":
		value = randomHex(8)
	case "create_function_handle":
		value = "function://" + randomHex(8)
	default:
		value = map[string]any{"op": op, "args": req.Args}
	}
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "value": value})
}

func (b *backend) handleUpload(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	data, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "read upload body: " + err.Error()})
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.uploads[tok] {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unknown or used upload token"})
		return
	}
	delete(b.uploads, tok)
	id := randomHex(16)
	b.files[id] = data
	writeJSON(w, http.StatusOK, map[string]string{"storageId": id})
}

func (b *backend) handleDownload(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	data, ok := b.files[r.PathValue("id")]
	b.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(data)
}

// handleNodeAction runs a "Node action" in the Node server and returns its JSON result as is.
func (b *backend) handleNodeAction(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ops   []string `json:"ops"`
		Delay string   `json:"delay"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode node-action body: " + err.Error()})
		return
	}
	body, _ := json.Marshal(map[string]any{
		"backendAddress": b.cfg.origin, // facts §1: callbacks go to --convex-origin
		"callbackToken":  b.token,
		"ops":            req.Ops,
		"delay":          req.Delay,
		// The deployment's variables the Node server puts in process.env for the action
		// (facts §11): here only the system ones every Convex function sees.
		"env": map[string]string{"CONVEX_CLOUD_URL": b.cfg.origin, "CONVEX_SITE_URL": b.cfg.site},
	})
	client, err := b.node.ensure()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	resp, err := client.Post("http://node/execute", "application/json", strings.NewReader(string(body)))
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "node-action: " + err.Error()})
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// nodeStartTimeout is how long the Node server has to come up, as upstream's start health
// check allows (crates/node_executor/src/local.rs l.114-125 at 94a42c3, facts §11). A Node that
// does not make it (a NODE_OPTIONS preload that throws or hangs) fails the action that started
// it, and the next action tries again.
const nodeStartTimeout = 5 * time.Second

// nodeServer is the long-lived `node local.cjs --ipc-path <sock>` child, started lazily and
// restarted when it dies (facts §5). It stays in the backend's process group on purpose: that
// is what makes a group-wide SIGINT dangerous.
type nodeServer struct {
	script string

	mu     sync.Mutex
	cmd    *exec.Cmd // nil when not running
	client *http.Client
	starts int
}

func (n *nodeServer) ensure() (*http.Client, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return n.client, nil
	}
	n.starts++
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("convex-standin-node-%d-%d.sock", os.Getpid(), n.starts))
	cmd := exec.Command("node", n.script, "--ipc-path", sock)
	// The backend's environment unchanged, NODE_OPTIONS and NODE_EXTRA_CA_CERTS included: the
	// real one does not clear it either (local.rs l.168-196, facts §11).
	cmd.Env = os.Environ()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start node server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node server %s: %w", n.script, err)
	}
	// local.cjs prints one "ready" line once it listens on the socket; EOF first means Node
	// exited before that.
	lines := bufio.NewReader(out)
	ready := make(chan error, 1)
	go func() {
		line, err := lines.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected first line %q", line)
		}
		ready <- err
		io.Copy(os.Stderr, lines)
	}()
	timer := time.NewTimer(nodeStartTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
		if errors.Is(err, io.EOF) {
			err = errors.New("exited before it was ready")
		}
	case <-timer.C:
		err = fmt.Errorf("not ready within %s (the start health check)", nodeStartTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		if werr := cmd.Wait(); werr != nil {
			err = fmt.Errorf("%w: %v", err, werr) // its exit status, or "signal: killed" after the timeout
		}
		err = fmt.Errorf("start node server %s: %w; every Node action fails until it starts", n.script, err)
		log.Print(err)
		return nil, err
	}
	log.Printf("node server started (pid %d, socket %s)", cmd.Process.Pid, sock)
	n.cmd = cmd
	n.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	go func() {
		err := cmd.Wait()
		log.Printf("node server (pid %d) exited: %v", cmd.Process.Pid, err)
		n.mu.Lock()
		if n.cmd == cmd {
			n.cmd = nil
		}
		n.mu.Unlock()
	}()
	return n.client, nil
}

func (n *nodeServer) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// kill sends SIGKILL to the Node server's pid only, as dropping it does in the real backend.
func (n *nodeServer) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		log.Printf("killing node server (pid %d)", n.cmd.Process.Pid)
		n.cmd.Process.Kill()
	}
}

// siteProxy forwards /... on the site port to /http/... on the API port (facts §3).
func siteProxy(apiPort int) http.Handler {
	target := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", apiPort), Path: "/http"}
	return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func randomHex(n int) string {
	buf := make([]byte, n)
	rand.Read(buf) // never fails on Linux (Go 1.24+)
	return hex.EncodeToString(buf)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("parse %s %q: %w", key, v, err)
	}
	return d, nil
}

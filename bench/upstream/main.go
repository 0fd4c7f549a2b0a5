// Command upstream stands in for the Convex backend in make bench: a plain
// net/http server, as the backend is an HTTP server on 127.0.0.1:3210.
//
//	GET /version         a short text body, as the backend answers
//	GET /bulk?bytes=N    N bytes of zeros with a Content-Length, written in
//	                     256 KiB slices: the bulk-transfer source
//
// It prints "ready" on stdout once it listens and serves until SIGTERM or
// SIGINT. No timeouts, like the backend's callback port.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// version is the /version body: the length of a real backend's answer.
const version = "unknown-bench-backend\n"

var zeros = make([]byte, 256<<10)

func main() {
	addr := flag.String("listen", "127.0.0.1:3210", "address to serve on")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, version)
	})
	mux.HandleFunc("GET /bulk", bulk)
	// Client resets at the end of a bulk stream are expected; keep them off
	// the terminal.
	srv := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	fmt.Println("ready")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func bulk(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "bytes=N required", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		k := int(min(n, int64(len(zeros))))
		if _, err := w.Write(zeros[:k]); err != nil {
			return // the client stopped reading: the end of a timed stream
		}
		n -= int64(k)
	}
}

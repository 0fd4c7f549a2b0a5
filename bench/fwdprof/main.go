// Command fwdprof runs the forward package exactly as convex-shim does for
// its default forward (a forward.Proxy with Listen, Target, DialRetry and a
// logger, started with Start), with profiling added, so make bench's
// figures can be explained. It is not part of make bench.
//
//	fwdprof -cpuprofile cpu.pprof [-listen 127.0.0.1:80] [-target 127.0.0.1:3210]
//
// Profiling starts at once; on SIGTERM or SIGINT it stops, writes the heap
// profile too if asked (-memprofile), prints "stopped" and exits.
// With -pprof ADDR it also serves net/http/pprof there (not on the
// forwarded port). GOMAXPROCS, GOGC and GOMEMLIMIT work as for convex-shim.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/convex-shim/convex-shim/forward"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:80", "forward from")
	target := flag.String("target", "127.0.0.1:3210", "forward to")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	memprofile := flag.String("memprofile", "", "write a heap profile here on exit")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address")
	flag.Parse()

	logger := log.New(os.Stderr, "fwdprof: ", 0)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			logger.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			logger.Fatal(err)
		}
	}
	if *pprofAddr != "" {
		go func() { logger.Print(http.ListenAndServe(*pprofAddr, nil)) }()
	}
	p := &forward.Proxy{Listen: *listen, Target: *target, DialRetry: forward.DefaultDialRetry, Log: logger}
	if err := p.Start(); err != nil {
		logger.Fatal(err)
	}
	logger.Printf("forwarding %s -> %s", *listen, *target)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err == nil {
			runtime.GC()
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	p.Close()
	fmt.Println("stopped")
}

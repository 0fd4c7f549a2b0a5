package main

import (
	"strings"
	"testing"
	"time"
)

// gatedWriter blocks every write until the gate opens, as a stderr pipe
// nobody reads does.
type gatedWriter struct {
	gate chan struct{}
	out  strings.Builder
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	return w.out.Write(p)
}

func TestLineLoggerNeverBlocks(t *testing.T) {
	w := &gatedWriter{gate: make(chan struct{})}
	l := newLineLogger(w)
	start := time.Now()
	for i := range 20000 { // far more than the buffer (and one batch) holds
		l.Printf("line %d", i)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("20000 Printf calls with stderr blocked took %v", d)
	}
	close(w.gate)
	l.Close(10 * time.Second)
	out := w.out.String()
	if !strings.HasPrefix(out, "convex-shim: line 0\n") {
		t.Fatalf("first line %q", out[:min(40, len(out))])
	}
	if !strings.Contains(out, "log lines dropped: stderr was not being read\n") {
		t.Fatalf("no count of dropped lines in %d bytes", len(out))
	}
	l.Printf("after close") // must not panic or block
}

func TestLineLoggerCloseGivesUp(t *testing.T) {
	w := &gatedWriter{gate: make(chan struct{})}
	l := newLineLogger(w)
	l.Printf("stuck")
	start := time.Now()
	l.Close(50 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close waited %v for a blocked stderr", d)
	}
	close(w.gate)
}

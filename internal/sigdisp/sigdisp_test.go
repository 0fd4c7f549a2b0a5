package sigdisp

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A real-time signal nothing in the test process sends; its whole struct
// is restored afterwards, the Go runtime's handler included.
const probe = unix.Signal(50)

func TestSetAndGet(t *testing.T) {
	var saved kernelSigaction
	if err := rtSigaction(probe, nil, &saved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rtSigaction(probe, &saved, nil) })

	// The Go runtime installs a handler for every signal it may see.
	if d, err := Get(unix.SIGURG); err != nil || d == Default || d == Ignore {
		t.Errorf("Get(SIGURG) = %v, %v; want the Go runtime's handler", d, err)
	}
	for _, d := range []Disposition{Ignore, Default, Ignore} {
		if err := Set(probe, d); err != nil {
			t.Fatal(err)
		}
		if got, err := Get(probe); err != nil || got != d {
			t.Errorf("after Set(%d): Get = %d, %v", d, got, err)
		}
	}
	// The kernel refuses SIGKILL's disposition; the error names the signal.
	if err := Set(unix.SIGKILL, Ignore); err == nil || err.Error() != "set disposition of SIGKILL: invalid argument" {
		t.Errorf("Set(SIGKILL, Ignore) = %v", err)
	}
}

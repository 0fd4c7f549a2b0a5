package forward

import (
	"testing"
	"time"
)

// The heap gives its timers back in order of when, after moves and
// removals, and disarms what it gives back or removes.
func TestTimerHeap(t *testing.T) {
	var h timerHeap
	ts := make([]timer, 6)
	for i, when := range []time.Duration{50, 10, 40, 30, 20, 60} {
		h.set(&ts[i], when)
	}
	h.set(&ts[5], 5)  // moved to the front
	h.set(&ts[1], 45) // moved back
	h.remove(&ts[2])  // 40 gone
	h.remove(&ts[2])  // twice is harmless
	var got []time.Duration
	for h.top() != nil {
		top := h.top()
		got = append(got, top.when)
		h.remove(top)
		if top.idx != 0 {
			t.Fatalf("timer at %v still armed (idx %d) after remove", top.when, top.idx)
		}
	}
	want := []time.Duration{5, 20, 30, 45, 50}
	if len(got) != len(want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fired %v, want %v", got, want)
		}
	}
}

package forward

import (
	"container/heap"
	"time"
)

// A timer is a point on a loop's clock: a connection's dial deadline or
// next retry, or the loop's accept backoff (c nil). Every dial has one, so
// arming and disarming it must not allocate: it lives in its conn, and the
// heap holds pointers to it.
type timer struct {
	when time.Duration
	idx  int // position in the heap, plus one; 0 when not armed
	c    *conn
}

// timerHeap is a min-heap on when, through container/heap.
type timerHeap []*timer

func (h timerHeap) top() *timer {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}

// set arms t for when, or moves it there if it is armed.
func (h *timerHeap) set(t *timer, when time.Duration) {
	t.when = when
	if t.idx == 0 {
		heap.Push(h, t)
		return
	}
	heap.Fix(h, t.idx-1)
}

// remove disarms t; a timer not armed is left alone.
func (h *timerHeap) remove(t *timer) {
	if t.idx != 0 {
		heap.Remove(h, t.idx-1)
	}
}

// heap.Interface.

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when < h[j].when }

func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i+1, j+1
}

func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	*h = append(*h, t)
	t.idx = len(*h)
}

func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = 0
	return t
}

package forward

import "time"

// A timer is a point on a loop's clock: a connection's dial deadline or
// next retry, or the loop's accept backoff (c nil). Every dial has one, so
// arming and disarming it must not allocate: it lives in its conn, and the
// heap holds pointers to it.
type timer struct {
	when time.Duration
	idx  int // position in the heap, plus one; 0 when not armed
	c    *conn
}

// timerHeap is a binary min-heap on when. container/heap would do the same
// through an interface and boxed values on every push and pop.
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
		*h = append(*h, t)
		t.idx = len(*h)
		h.up(t.idx - 1)
		return
	}
	h.up(t.idx - 1)
	h.down(t.idx - 1)
}

// remove disarms t; a timer not armed is left alone.
func (h *timerHeap) remove(t *timer) {
	if t.idx == 0 {
		return
	}
	i, last := t.idx-1, len(*h)-1
	t.idx = 0
	if i != last {
		(*h)[i] = (*h)[last]
		(*h)[i].idx = i + 1
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	if i != last {
		h.up(i)
		h.down((*h)[i].idx - 1)
	}
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i+1, j+1
}

func (h timerHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].when <= h[i].when {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h timerHeap) down(i int) {
	for {
		least := i
		if l := 2*i + 1; l < len(h) && h[l].when < h[least].when {
			least = l
		}
		if r := 2*i + 2; r < len(h) && h[r].when < h[least].when {
			least = r
		}
		if least == i {
			return
		}
		h.swap(i, least)
		i = least
	}
}

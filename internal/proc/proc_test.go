package proc

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 7 8 9 10 20 0 1 0 123456 0 0"
	for _, tc := range []struct {
		in   string
		want Stat
		err  string
	}{
		{"42 (sleep) S 1 42 42" + tail, Stat{PID: 42, State: 'S', PPID: 1, PGRP: 42, UTime: 7, STime: 8, CUTime: 9, CSTime: 10, StartTime: 123456}, ""},
		// The command name is whatever the process chose: spaces, ')' and
		// a fake field list included.
		{"7 (a) Z 3 4 ) R 9 9 9) Z 5 6 6" + tail, Stat{PID: 7, State: 'Z', PPID: 5, PGRP: 6, UTime: 7, STime: 8, CUTime: 9, CSTime: 10, StartTime: 123456}, ""},
		{"7 sleep S 1 1 1" + tail, Stat{}, "no command name"},
		{"x (sleep) S 1 1 1" + tail, Stat{}, "pid"},
		{"7 (sleep) S 1 1 1", Stat{}, "4 fields after the command name"},
		{"7 (sleep) S one 1 1" + tail, Stat{}, "field 4"},
	} {
		got, err := ParseStat([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseStat(%q): error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// FDs of this process include a pipe just made, by number and kind.
func TestFDsSelf(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fds, err := FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, fd := range fds {
		if (fd.Num == int(r.Fd()) || fd.Num == int(w.Fd())) && strings.HasPrefix(fd.Target, "pipe:") {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("FDs found %d of the pipe's 2 ends among %v", found, fds)
	}
}

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || st.PPID != os.Getppid() || st.State == 'Z' || st.StartTime == 0 {
		t.Fatalf("ReadStat(self) = %+v", st)
	}
	pids, err := PIDs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, os.Getpid()) {
		t.Fatalf("PIDs() lacks this process %d", os.Getpid())
	}
	var kids []int
	for _, c := range Children(os.Getppid()) {
		kids = append(kids, c.PID)
	}
	if !slices.Contains(kids, os.Getpid()) {
		t.Fatalf("Children(%d) = %v, lacks this process", os.Getppid(), kids)
	}
	if _, err := ReadStat(-1); err == nil {
		t.Fatal("ReadStat(-1): no error")
	}
}

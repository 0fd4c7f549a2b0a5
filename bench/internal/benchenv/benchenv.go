// Package benchenv is what the make bench programs (bench/runner,
// bench/callbacks) share about where they run and what they write: the
// private network namespace they insist on, the machine line of a report,
// and the rewriting of their own section of docs/benchmarks.md, which
// leaves everything outside their markers as it was.
package benchenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckPrivateNet refuses a network namespace with anything but lo up: the
// benchmarks bind well-known loopback ports (80, 3210) and load them, which
// must hit nobody else's. how says how to run the program properly.
func CheckPrivateNet(how string) error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("list network interfaces: %w", err)
	}
	for _, i := range ifs {
		if i.Name != "lo" {
			return fmt.Errorf("interface %s exists: %s, in a private network namespace", i.Name, how)
		}
		if i.Flags&net.FlagUp == 0 {
			return fmt.Errorf("lo is down: ip link set lo up")
		}
	}
	return nil
}

// CPUModel is the first "model name" of /proc/cpuinfo, or "".
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Kernel is the running kernel's release, or "".
func Kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Loadavg is the 1, 5 and 15 minute load averages, or "?".
func Loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// WriteBetweenMarkers replaces what lies between the lines begin and end in
// file with text (which ends in a newline), or, where they are not both
// there in order, appends begin, text and end to the file.
func WriteBetweenMarkers(file, begin, end, text string) error {
	old, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", file, err)
	}
	s := string(old)
	block := begin + "\n" + text + end + "\n"
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + block + strings.TrimPrefix(s[j+len(end):], "\n")
	} else {
		if s != "" && !strings.HasSuffix(s, "\n\n") {
			s += "\n"
		}
		s += block
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

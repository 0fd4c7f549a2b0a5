package shim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the supervised program (the os/exec helper
// pattern of internal/pid1test): in a helper role it plays it instead of
// testing.
func TestMain(m *testing.M) {
	pid1test.Dispatch(func(role string) {
		switch role {
		case "exit":
			var code int
			fmt.Sscan(os.Getenv("SHIM_TEST_CODE"), &code)
			os.Exit(code)
		case "orphans":
			// Leave a long-lived orphan behind (a child we do not wait for),
			// print its pid, and exit: it must be adopted and cleaned up.
			cmd := pid1test.Self("sleeper")
			cmd.Stdout = nil
			ready, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				fmt.Println("start sleeper:", err)
				os.Exit(1)
			}
			line, _ := bufio.NewReader(ready).ReadString('\n')
			fmt.Printf("orphan %d %s", cmd.Process.Pid, line)
			os.Exit(7)
		case "sleeper":
			// Ignore SIGTERM so cleanup has to escalate to SIGKILL.
			signal.Ignore(unix.SIGTERM)
			fmt.Println("ignoring SIGTERM")
			time.Sleep(time.Hour)
		}
	})
	os.Exit(m.Run())
}

func TestExitStatus(t *testing.T) {
	for code := range 256 {
		ws := unix.WaitStatus(code << 8)
		if got := ExitStatus(ws); got != code {
			t.Errorf("exit %d: got %d", code, got)
		}
	}
	for sig := unix.Signal(1); sig < 32; sig++ {
		if sig == unix.SIGSTOP { // 0x7f is the "stopped" marker, not a death
			continue
		}
		ws := unix.WaitStatus(sig)
		if got, want := ExitStatus(ws), 128+int(sig); got != want {
			t.Errorf("signal %d: got %d, want %d", sig, got, want)
		}
		ws |= 0x80 // core dumped does not change the status
		if got, want := ExitStatus(ws), 128+int(sig); got != want {
			t.Errorf("signal %d with core: got %d, want %d", sig, got, want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "prog")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("data"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	env := []string{"PATH=/nonexistent:" + dir}

	for _, tc := range []struct {
		name string
		want int // 0: found
		msg  string
	}{
		{exe, 0, ""},
		{"prog", 0, ""},
		{filepath.Join(dir, "missing"), ExitNotFound, "no such file or directory"},
		{"missing", ExitNotFound, "not found in PATH"},
		{plain, ExitNotExecutable, "permission denied"},
		{"plain", ExitNotExecutable, "permission denied"},
		{filepath.Join(dir, "sub"), ExitNotExecutable, "is a directory"},
		{exe + "/x", ExitNotFound, "not a directory"},
	} {
		_, err := LookPath(tc.name, env)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("LookPath(%q): %v", tc.name, err)
			}
			continue
		}
		var se *StartError
		if !errors.As(err, &se) || se.Code != tc.want || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("LookPath(%q) = %v, want code %d and %q", tc.name, err, tc.want, tc.msg)
		}
		if !strings.HasPrefix(err.Error(), "start ") {
			t.Errorf("error %q does not name the operation", err)
		}
	}
}

// runHelper supervises this test binary in the given role. The test process
// is not PID 1 here, so Run works as a child subreaper.
func runHelper(t *testing.T, role string, env ...string) (int, string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child inherits fd 1; point it at the pipe for the run.
	saved, _ := unix.Dup(1)
	unix.Dup2(int(w.Fd()), 1)
	s := &Supervisor{
		Path:         os.Args[0],
		Env:          append(os.Environ(), append([]string{pid1test.RoleVar + "=" + role}, env...)...),
		CleanupGrace: 300 * time.Millisecond,
	}
	status, runErr := s.Run()
	unix.Dup2(saved, 1)
	unix.Close(saved)
	w.Close()
	out, _ := io.ReadAll(bufio.NewReader(r))
	r.Close()
	return status, string(out), runErr
}

func TestRunPassesExitCode(t *testing.T) {
	for _, code := range []int{0, 1, 3, 42, 126, 127, 255} {
		status, _, err := runHelper(t, "exit", fmt.Sprintf("SHIM_TEST_CODE=%d", code))
		if err != nil || status != code {
			t.Errorf("exit %d: got status %d, err %v", code, status, err)
		}
	}
}

// Not PID 1, the supervisor is a subreaper: an orphan the program leaves is
// adopted, SIGTERMed, SIGKILLed when it ignores that, and reaped before Run
// returns.
func TestRunCleansUpAdoptedOrphan(t *testing.T) {
	start := time.Now()
	status, out, err := runHelper(t, "orphans")
	if err != nil || status != 7 {
		t.Fatalf("status %d, err %v, output %q", status, err, out)
	}
	var pid int
	if _, err := fmt.Sscanf(out, "orphan %d ignoring SIGTERM", &pid); err != nil {
		t.Fatalf("no ready orphan in %q", out)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Run returned after %v, before CleanupGrace: SIGTERM cannot have been escalated", d)
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("orphan %d still exists after Run returned (kill 0: %v)", pid, err)
	}
}

func TestRunStartError(t *testing.T) {
	s := &Supervisor{Path: filepath.Join(t.TempDir(), "missing")}
	_, err := s.Run()
	var se *StartError
	if !errors.As(err, &se) || se.Code != ExitNotFound {
		t.Fatalf("got %v, want a StartError with code 127", err)
	}
}

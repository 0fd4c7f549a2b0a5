package reliability

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convex-shim/convex-shim/internal/pid1test"
	"golang.org/x/sys/unix"
)

// peerNetns starts a process in a network namespace of its own: the other
// end of the veth pair, "the network" outside the shim's namespace.
func peerNetns(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(pid1test.HelperBin)
	cmd.Env = append(os.Environ(), pid1test.RoleVar+"=holder")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a process in a new network namespace: %v (needs CAP_SYS_ADMIN; the kernel refused)", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, len("holder ready\n"))
	if _, err := out.Read(line); err != nil || string(line) != "holder ready\n" {
		t.Fatalf("holder: %q %v", line, err)
	}
	return cmd.Process.Pid
}

func nsenter(t *testing.T, pid int, script string) {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "--", "/bin/sh", "-ec", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in the network namespace of %d: %s: %v\n%s", pid, script, err, out)
	}
}

// try dials addr from inside the network namespace of pid and reports "ok"
// (an echo round trip through it worked), "refused", or the error.
func try(pid int, addr string) string {
	var res string
	nsRun(pid, 1, func(int) error {
		c, err := dialFrom("", addr, 5*time.Second)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			res = "refused"
			return nil
		case err != nil:
			res = err.Error()
			return nil
		}
		defer c.Close()
		if err := echoRoundTrip(c, "echo\nping\n", "ok\nping\n"); err != nil {
			res = err.Error()
			return nil
		}
		res = "ok"
		return nil
	})
	return res
}

// The forwarder listens on loopback only unless --allow-public: in the
// shim's private network namespace a veth interface has 192.0.2.1
// (TEST-NET-1; its peer 192.0.2.2 is in a namespace of its own, "the
// network"). The backend listens on 0.0.0.0:3210 as Convex does, so the path
// works; port 80 on 192.0.2.1 must be refused from both sides while
// 127.0.0.1:80 forwards. Origins naming a non-loopback address get no
// listener. With --allow-public --forward 0.0.0.0:80=127.0.0.1:3210 port 80
// is reachable from the network, and without the flag that configuration
// (or its env twin) does not start.
func TestLoopbackOnlyByDefault(t *testing.T) {
	var peer int
	run := func(t *testing.T, args, env []string) *pid1test.Instance {
		t.Helper()
		peer = peerNetns(t)
		setup := fmt.Sprintf(`ip link add veth0 type veth peer name veth1 netns /proc/%d/ns/net
ip addr add 192.0.2.1/24 dev veth0
ip link set veth0 up`, peer)
		r := start(t, opts{PID1: true, Setup: setup, Args: args, Env: append([]string{"REL_LISTEN=0.0.0.0:3210"}, env...)})
		r.Line("listening")
		nsenter(t, peer, "ip link set lo up; ip addr add 192.0.2.2/24 dev veth1; ip link set veth1 up")
		// Ready when the network reaches the backend itself.
		if !eventually(10*time.Second, 20*time.Millisecond, func() bool { return try(peer, "192.0.2.1:3210") == "ok" }) {
			t.Fatalf("the peer namespace cannot reach 192.0.2.1:3210: %s", try(peer, "192.0.2.1:3210"))
		}
		return r
	}
	stop := func(t *testing.T, r *pid1test.Instance) {
		t.Helper()
		if err := r.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := r.Wait(30 * time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
	}

	t.Run("default", func(t *testing.T) {
		r := run(t, nil, []string{"CONVEX_CLOUD_ORIGIN=http://192.0.2.1:8080", "CONVEX_SITE_ORIGIN=http://0.0.0.0:8081"})
		for _, c := range []struct {
			from       int
			where      string
			addr, want string
		}{
			{r.PID, "inside", "127.0.0.1:80", "ok"},
			{r.PID, "inside", "192.0.2.1:80", "refused"},
			{r.PID, "inside", "192.0.2.1:8080", "refused"},
			{r.PID, "inside", "192.0.2.1:8081", "refused"},
			{peer, "the network", "192.0.2.1:80", "refused"},
			{peer, "the network", "192.0.2.1:8080", "refused"},
			{peer, "the network", "192.0.2.1:8081", "refused"},
		} {
			got := try(c.from, c.addr)
			t.Logf("default: %s from %s: %s", c.addr, c.where, got)
			if got != c.want {
				t.Errorf("default: %s from %s: %s, want %s", c.addr, c.where, got, c.want)
			}
		}
		// http://0.0.0.0:8081 is this machine to Node (Linux connects 0.0.0.0 to
		// 127.0.0.1), so it gets a forward, on loopback only: 192.0.2.1:8081 stays
		// refused above. The non-loopback origin gets no listener, only a notice.
		if log := r.Stderr.String(); !strings.Contains(log, "CONVEX_CLOUD_ORIGIN is http://192.0.2.1:8080") ||
			!strings.Contains(log, "forwarding 127.0.0.1:80 -> 127.0.0.1:3210 (default), 127.0.0.1:8081 -> 127.0.0.1:3211 (CONVEX_SITE_ORIGIN)\x3b") {
			t.Errorf("want the default forward, a loopback forward for 0.0.0.0:8081 and a notice for the non-loopback origin:\n%s", log)
		}
		stop(t, r)
	})

	t.Run("allow-public", func(t *testing.T) {
		r := run(t, []string{"--allow-public", "--forward", "0.0.0.0:80=127.0.0.1:3210"}, nil)
		for _, c := range []struct {
			from       int
			where      string
			addr, want string
		}{
			{r.PID, "inside", "127.0.0.1:80", "ok"},
			{r.PID, "inside", "192.0.2.1:80", "ok"},
			{peer, "the network", "192.0.2.1:80", "ok"},
		} {
			got := try(c.from, c.addr)
			t.Logf("--allow-public: %s from %s: %s", c.addr, c.where, got)
			if got != c.want {
				t.Errorf("--allow-public: %s from %s: %s, want %s", c.addr, c.where, got, c.want)
			}
		}
		stop(t, r)
	})

	t.Run("refused without the flag", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			env  []string
			addr string
		}{
			{[]string{"--forward", "0.0.0.0:80=127.0.0.1:3210"}, nil, "0.0.0.0:80"},
			{[]string{"--forward", "192.0.2.1:80=127.0.0.1:3210"}, nil, "192.0.2.1:80"},
			{[]string{"--forward", "[::]:80=127.0.0.1:3210"}, nil, "[::]:80"},
			{nil, []string{"CONVEX_SHIM_FORWARD=0.0.0.0:80=127.0.0.1:3210"}, "0.0.0.0:80"},
			{[]string{"--allow-public=false", "--forward", "0.0.0.0:80=127.0.0.1:3210"}, []string{"CONVEX_SHIM_ALLOW_PUBLIC=1"}, "0.0.0.0:80"},
		} {
			r := start(t, opts{PID1: true, Args: c.args, Env: c.env})
			code := r.Wait(30 * time.Second)
			log := r.Stderr.String()
			t.Logf("%v %v: exit %d: %s", c.args, c.env, code, strings.TrimSpace(log))
			if code != 2 || strings.Count(log, "\n") != 1 || !strings.Contains(log, c.addr+" is not a loopback address") || !strings.Contains(log, "--allow-public") {
				t.Errorf("%v %v: exit %d, %q; want exit 2 and one line naming %s and --allow-public", c.args, c.env, code, log, c.addr)
			}
			if out := r.Stdout.All(); len(out) > 0 {
				t.Errorf("%v %v: the backend ran: %q", c.args, c.env, out)
			}
		}
	})
}

func marker() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "MARK" + hex.EncodeToString(b)
}

// Secrets in the environment never reach a log line: with INSTANCE_SECRET,
// the database URLs and cloud keys set to unique markers, the shim runs at
// default verbosity and with -v through startup, forwarding (connections,
// a failed dial), forwarded signals, a stop, a crash, a bad-config exit, a
// bind failure, a missing program and --check; no line of its stdout or
// stderr contains a marker, while the backend's environment has them all.
func TestSecretsNeverLogged(t *testing.T) {
	secrets := map[string]string{}
	var env []string
	for _, name := range []string{"INSTANCE_SECRET", "POSTGRES_URL", "MYSQL_URL", "DATABASE_URL",
		"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "CONVEX_ADMIN_KEY", "S3_ENDPOINT_URL", "DO_NOT_REQUIRE_SSL"} {
		m := marker()
		secrets[name] = m
		v := m
		if strings.HasSuffix(name, "_URL") {
			v = "postgres://convex:" + m + "@db.invalid:5432/" + m
		}
		env = append(env, name+"="+v)
	}
	var all bytes.Buffer
	check := func(t *testing.T, what string, r *pid1test.Instance) {
		t.Helper()
		out := r.Stdout.String() + r.Stderr.String()
		all.WriteString(out)
		for name, m := range secrets {
			if strings.Contains(out, m) {
				t.Errorf("%s: the value of %s appears in the output:\n%s", what, name, out)
			}
		}
	}
	for _, verbose := range []bool{false, true} {
		var v []string
		if verbose {
			v = []string{"-v"}
		}
		name := fmt.Sprintf("verbose=%v", verbose)
		t.Run(name, func(t *testing.T) {
			// Startup, forwarding, a dial that fails, signals, a stop.
			r := start(t, opts{PID1: true, Args: append([]string{"--forward", "127.0.0.1:80=127.0.0.1:3210,127.0.0.1:81=127.0.0.1:9", "--dial-retry", "200ms"}, v...),
				Env: append([]string{"REL_LISTEN=127.0.0.1:3210", "CONVEX_CLOUD_ORIGIN=https://api.example.com"}, env...)})
			var backend int
			fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backend)
			r.Line("listening")
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", hostPID(r.PID, backend)))
			if err != nil {
				t.Fatal(err)
			}
			for name, m := range secrets {
				if !bytes.Contains(environ, []byte(m)) {
					t.Errorf("the backend's environment lacks %s", name)
				}
			}
			conns, err := openHeld(r.PID, 20, "127.0.0.1:80")
			if err != nil {
				t.Fatal(err)
			}
			closeAll(conns)
			nsRun(r.PID, 1, func(int) error {
				c, err := dialFrom("", "127.0.0.1:81", 5*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					c.Read(make([]byte, 1)) // closed once the dial is given up
					c.Close()
				}
				return nil
			})
			r.LogLine("giving up on client", 10*time.Second)
			for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH} {
				r.Signal(s)
				r.Line("backend got " + unix.SignalName(s))
			}
			r.Signal(syscall.SIGTERM)
			if code := r.Wait(30 * time.Second); code != 0 {
				t.Errorf("exit %d after SIGTERM", code)
			}
			check(t, "run and stop", r)

			// A crash with a traceback on the shared stderr.
			r = start(t, opts{PID1: true, Args: append([]string{"--forward", "off"}, v...), Env: append([]string{"REL_CRASH=abrt"}, env...)})
			r.Line("ready ")
			r.Signal(syscall.SIGHUP)
			if code := r.Wait(30 * time.Second); code != 134 {
				t.Errorf("crash: exit %d, want 134", code)
			}
			check(t, "crash", r)

			// Exits before anything runs.
			for _, c := range []struct {
				what string
				args []string
				env  []string
				code int
			}{
				{"bad duration", []string{"--grace", "bogus"}, nil, 2},
				{"bad env twin", nil, []string{"CONVEX_SHIM_STOP_SIGNAL=SIGBOGUS"}, 2},
				{"bad forward", []string{"--forward", "nonsense"}, nil, 2},
				{"no address", []string{"--allow-public", "--forward", "192.0.2.99:80=127.0.0.1:3210"}, nil, 1},
				{"missing program", nil, []string{"REL_PROGRAM_MISSING=1"}, 127},
			} {
				o := opts{PID1: true, Args: append(append([]string{}, c.args...), v...), Env: append(append([]string{}, c.env...), env...)}
				if c.code == 127 {
					o.Program = []string{"/nonexistent/run_backend.sh"}
				}
				r := start(t, o)
				if code := r.Wait(30 * time.Second); code != c.code {
					t.Errorf("%s: exit %d, want %d", c.what, code, c.code)
				}
				check(t, c.what, r)
			}

			// --check, with and without a backend to answer.
			r = start(t, opts{PID1: true, Args: v, Env: append([]string{"REL_LISTEN=127.0.0.1:3210"}, env...)})
			r.Line("listening")
			cmd := exec.Command("nsenter", "-t", strconv.Itoa(r.PID), "-n", "--", pid1test.ShimBin, "--check")
			cmd.Env = append(os.Environ(), env...)
			out, _ := cmd.CombinedOutput()
			for name, m := range secrets {
				if strings.Contains(string(out), m) {
					t.Errorf("--check: the value of %s appears:\n%s", name, out)
				}
			}
			all.Write(out)
			r.Signal(syscall.SIGTERM)
			r.Wait(30 * time.Second)
			check(t, "check", r)
		})
	}
	t.Logf("%d secrets, %d lines of output across both verbosities: no marker in any", len(secrets), strings.Count(all.String(), "\n"))
}

// The backend is executed directly: no shell between it and the shim (its
// parent is the shim, its executable and argv exactly the program given),
// with the shim's environment unchanged, byte for byte, odd entries
// included (empty value, newline, '=' in the value, non-UTF-8, 64 KiB).
func TestChildExecutedDirectly(t *testing.T) {
	odd := []string{"EMPTY=", "MULTI=line one\nline two", "EQ=a=b==c", "SPACES=  padded  ",
		"BYTES=\xff\xfe\x01", "LONG=" + strings.Repeat("x", 64<<10), "PATH=/usr/bin:/bin", "CONVEX_CLOUD_ORIGIN=http://127.0.0.1:3210"}
	argv := []string{pid1test.HelperBin, "arg one", "--flag=x", "", "ünïcode", "$HOME", "a;b"}
	r := start(t, opts{NoNet: true, Args: []string{"--forward", "off"}, ExactEnv: odd, Program: argv})
	var backend int
	fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backend)

	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", backend))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(cmdline), strings.Join(argv, "\x00")+"\x00"; got != want {
		t.Errorf("backend cmdline %q, want %q", got, want)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", backend)); exe != pid1test.HelperBin {
		t.Errorf("backend executable %s, want %s", exe, pid1test.HelperBin)
	}
	if p := ppidOf(backend); p != r.PID {
		t.Errorf("backend's parent is %d, not the shim %d", p, r.PID)
	}
	shimEnv, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", r.PID))
	if err != nil {
		t.Fatal(err)
	}
	backendEnv, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", backend))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shimEnv, backendEnv) {
		t.Errorf("the backend's environment differs from the shim's:\nshim    %q\nbackend %q", shorten(shimEnv), shorten(backendEnv))
	}
	t.Logf("backend pid %d: parent the shim, cmdline %d args as given, environment %d entries / %d bytes identical to the shim's",
		backend, len(argv), bytes.Count(shimEnv, []byte{0}), len(shimEnv))
	r.Signal(syscall.SIGTERM)
	if code := r.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func shorten(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "LONG="); i >= 0 {
		s = s[:i+10] + "..." + s[i+5+64<<10:]
	}
	return s
}

// The environment the shim gets may hold the same name twice (a platform
// bug, a hand-built exec). The backend still gets it unchanged (os.Environ
// would drop the second); a shell such as run_backend.sh's bash takes the
// last one.
func TestChildEnvironmentDuplicates(t *testing.T) {
	env := []string{"DUP=first", "NOEQUALS", "DUP=second"}
	r := start(t, opts{NoNet: true, Args: []string{"--forward", "off"}, ExactEnv: env})
	var backend int
	fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backend)
	shimEnv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", r.PID))
	backendEnv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", backend))
	if !bytes.Equal(shimEnv, backendEnv) {
		t.Errorf("the shim was started with %q, the backend got %q", shimEnv, backendEnv)
	}
	r.Signal(syscall.SIGTERM)
	r.Wait(30 * time.Second)
}

// Non-root, where binding port 80 is allowed: uid 1000 with the ambient
// capability CAP_NET_BIND_SERVICE, and uid 1000 with
// net.ipv4.ip_unprivileged_port_start=80 in the private namespace; the
// forward works and both the shim and the backend run as uid 1000. With
// neither, exit 1 and one line naming 127.0.0.1:80 and
// CAP_NET_BIND_SERVICE, and the backend is not started.
func TestNonRoot(t *testing.T) {
	const uid = "1000"
	setpriv := []string{"setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"}
	for _, c := range []struct {
		name  string
		wrap  []string
		setup string
		ok    bool
	}{
		{"ambient CAP_NET_BIND_SERVICE", append(append([]string{}, setpriv...), "--inh-caps", "+net_bind_service", "--ambient-caps", "+net_bind_service"), "", true},
		{"ip_unprivileged_port_start=80", setpriv, "echo 80 > /proc/sys/net/ipv4/ip_unprivileged_port_start", true},
		{"neither", setpriv, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := start(t, opts{PID1: true, Wrap: c.wrap, Setup: c.setup, Env: []string{"REL_LISTEN=127.0.0.1:3210"}})
			if !c.ok {
				code := r.Wait(30 * time.Second)
				log := r.Stderr.String()
				t.Logf("exit %d: %s", code, strings.TrimSpace(log))
				if code != 1 || strings.Count(log, "\n") != 1 || !strings.Contains(log, "127.0.0.1:80") || !strings.Contains(log, "CAP_NET_BIND_SERVICE") {
					t.Errorf("exit %d, %q; want exit 1 and one line naming 127.0.0.1:80 and CAP_NET_BIND_SERVICE", code, log)
				}
				if out := r.Stdout.All(); len(out) > 0 {
					t.Errorf("the backend ran: %q", out)
				}
				return
			}
			var backend int
			fmt.Sscanf(r.Line("ready pid="), "ready pid=%d", &backend)
			r.Line("listening")
			if got := try(r.PID, "127.0.0.1:80"); got != "ok" {
				t.Errorf("127.0.0.1:80: %s", got)
			}
			for who, pid := range map[string]int{"shim": r.PID, "backend": hostPID(r.PID, backend)} {
				if f := strings.Fields(statusField(pid, "Uid")); len(f) == 0 || f[0] != uid || f[1] != uid {
					t.Errorf("%s runs as uid %v, want %s", who, f, uid)
				}
			}
			t.Logf("shim uid %s, CapEff %s; backend uid %s; 127.0.0.1:80 forwards",
				strings.Fields(statusField(r.PID, "Uid"))[0], statusField(r.PID, "CapEff"), uid)
			r.Signal(syscall.SIGTERM)
			if code := r.Wait(30 * time.Second); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

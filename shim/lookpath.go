package shim

import (
	"errors"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

var errIsDir = errors.New("is a directory")

// Environ returns the environment the shim was started with, exactly:
// os.Environ drops the second of two entries with the same name, and the
// backend must get what the platform gave, byte for byte.
func Environ() []string {
	b, err := os.ReadFile("/proc/self/environ")
	if err != nil || len(b) == 0 {
		return os.Environ()
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// LookPath resolves a program the way execvp would, with PATH taken from
// env (the child's environment), and checks that it can be executed. Its
// error is a *StartError, so bad input is reported before anything starts.
func LookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, checkExecutable(name)
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
			break // the first, as getenv(3) finds it
		}
	}
	var firstErr error
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		full := dir + "/" + name
		err := checkExecutable(full)
		if err == nil {
			return full, nil
		}
		var se *StartError
		if errors.As(err, &se) && se.Code == ExitNotExecutable && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", &StartError{Path: name, Code: ExitNotFound, Err: errors.New("not found in PATH")}
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in StartError
		}
		return startError(path, err)
	}
	if fi.IsDir() {
		return &StartError{Path: path, Code: ExitNotExecutable, Err: errIsDir}
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return startError(path, err)
	}
	return nil
}

func startError(path string, err error) error {
	code := ExitNotExecutable
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		code = ExitNotFound
	}
	return &StartError{Path: path, Code: code, Err: err}
}

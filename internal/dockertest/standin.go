package dockertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"
)

// SignalLog returns the lines of the stand-in's signal log ("backend SIGINT", "node SIGTERM"),
// read with docker cp so that it works after the container has exited too; nil if no signal
// was ever recorded (the file does not exist).
func (c *Container) SignalLog(t testing.TB) []string {
	t.Helper()
	_, data, err := c.copyOut(SignalLogPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// NodeResult is the stand-in's reply to POST /test/node-action.
type NodeResult struct {
	OK      bool `json:"ok"`
	Results []struct {
		Op    string          `json:"op"`
		OK    bool            `json:"ok"`
		Value json.RawMessage `json:"value"`
		Error string          `json:"error"`
		Ms    float64         `json:"ms"` // how long the op took, timed by the Node server
	} `json:"results"`
}

// Errors lists "op: error" for each failed op.
func (r NodeResult) Errors() []string {
	var errs []string
	for _, res := range r.Results {
		if !res.OK {
			errs = append(errs, res.Op+": "+res.Error)
		}
	}
	return errs
}

// NodeAction runs a Node action in the stand-in that makes the callbacks in ops, each held
// for delay by the backend (Go duration; empty for none).
func (c *Container) NodeAction(delay string, ops ...string) (NodeResult, error) {
	var res NodeResult
	body, _ := json.Marshal(map[string]any{"ops": ops, "delay": delay})
	resp, err := http.Post("http://"+c.API+"/test/node-action", "application/json", bytes.NewReader(body))
	if err != nil {
		return res, fmt.Errorf("post node-action %v: %w", ops, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, fmt.Errorf("read node-action %v reply: %w", ops, err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("node-action %v: HTTP %d: %s", ops, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("decode node-action %v reply %q: %w", ops, raw, err)
	}
	return res, nil
}

// NodeActionOK is NodeAction, with an error also when the action reports a failed callback.
func (c *Container) NodeActionOK(delay string, ops ...string) (NodeResult, error) {
	res, err := c.NodeAction(delay, ops...)
	if err == nil && !res.OK {
		err = fmt.Errorf("node action %v (held %q) failed: %q", ops, delay, res.Errors())
	}
	return res, err
}

// Post sends an empty POST to path on the API port and fails unless it answers want; it
// returns the body.
func (c *Container) Post(t testing.TB, path string, want int) string {
	t.Helper()
	url := "http://" + c.API + path
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", url, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("POST %s: HTTP %d %q, want %d", url, resp.StatusCode, body, want)
	}
	return string(body)
}

// Orphans asks the stand-in backend to leave n orphans that each live for life
// (POST /test/orphans) and returns their pids.
func (c *Container) Orphans(t testing.TB, n int, life time.Duration) []int {
	t.Helper()
	body := c.Post(t, fmt.Sprintf("/test/orphans?n=%d&life=%s", n, life), http.StatusOK)
	var reply struct{ PIDs []int }
	if err := json.Unmarshal([]byte(body), &reply); err != nil || len(reply.PIDs) != n {
		t.Fatalf("POST /test/orphans?n=%d: reply %q (%v), want %d pids", n, body, err, n)
	}
	return reply.PIDs
}

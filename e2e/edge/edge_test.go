package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// startEdge serves an edge for upstream over TLS with its own certificate for
// convex.example.test, and returns a client that trusts only the edge's CA and dials the
// edge for every name, and the admin handler's server.
func startEdge(t *testing.T, upstream string, latency time.Duration) (*http.Client, string, *httptest.Server) {
	t.Helper()
	caPEM, cert, err := newCertificates([]string{"convex.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEdge(upstream)
	if err != nil {
		t.Fatal(err)
	}
	e.latency.Store(int64(latency))
	srv := httptest.NewUnstartedServer(e)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	admin := httptest.NewServer(e.admin(caPEM))
	t.Cleanup(admin.Close)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA PEM %q: no certificate", caPEM)
	}
	addr := srv.Listener.Addr().String()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	return client, admin.URL, srv
}

func requests(t *testing.T, admin string) []Request {
	t.Helper()
	resp, err := http.Get(admin + "/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen []Request
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatal(err)
	}
	return seen
}

func TestEdge(t *testing.T) {
	// The upstream echoes what reached it: the Host the client used, the path, the body.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.Host+" "+r.URL.RequestURI()+" "+string(body))
	}))
	defer upstream.Close()
	for _, tc := range []struct {
		name, upstream string
		latency        time.Duration
		want           string
	}{
		{"proxies", upstream.URL, 0, "POST convex.example.test /http/hook?x=1 body"},
		{"proxies with latency", upstream.URL, 20 * time.Millisecond, "POST convex.example.test /http/hook?x=1 body"},
		{"answers itself", "", 0, "edge convex.example.test: POST /http/hook?x=1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, admin, _ := startEdge(t, tc.upstream, tc.latency)
			began := time.Now()
			resp, err := client.Post("https://convex.example.test/http/hook?x=1", "text/plain", strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(began)
			if string(body) != tc.want {
				t.Errorf("reply %q, want %q", body, tc.want)
			}
			// The latency is slept, each way: the round trip cannot be shorter.
			if took < 2*tc.latency {
				t.Errorf("round trip took %s, want at least 2 x %s", took, tc.latency)
			}
			seen := requests(t, admin)
			if len(seen) != 1 || seen[0].Method != "POST" || seen[0].URL != "https://convex.example.test/http/hook?x=1" {
				t.Errorf("requests recorded %+v, want the one POST https://convex.example.test/http/hook?x=1", seen)
			}
		})
	}
}

// A client that does not trust the edge's CA is refused: the certificate is the test CA's.
func TestEdgeCertificateNeedsItsCA(t *testing.T) {
	_, _, srv := startEdge(t, "", 0)
	_, err := (&http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: "convex.example.test"},
	}}).Get("https://" + srv.Listener.Addr().String() + "/")
	if !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Fatalf("GET without the CA: %v, want x509: certificate signed by unknown authority", err)
	}
}

func TestEdgeConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, key, value, want string }{
		{"upstream not a URL", "EDGE_UPSTREAM", "backend:3210", `parse EDGE_UPSTREAM "backend:3210"`},
		{"bad latency", "EDGE_LATENCY", "2", `parse EDGE_LATENCY "2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{tc.key: tc.value, "EDGE_TLS_ADDR": "127.0.0.1:0", "EDGE_HTTP_ADDR": "127.0.0.1:0", "EDGE_ADMIN_ADDR": "127.0.0.1:0"}
			err := run(func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run with %s=%q: %v, want an error containing %q", tc.key, tc.value, err, tc.want)
			}
		})
	}
}

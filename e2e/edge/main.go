// Command edge plays the public edge in front of a Convex backend in the end-to-end tests: Fly's
// proxy, a reverse proxy on one's own infrastructure, a Kubernetes ingress. It terminates TLS
// for made-up public names (convex.example.test) with a certificate from a CA it generates at
// start, in memory, and proxies every request to one upstream (the backend's 3210; the site
// origin is that origin plus /http, as in Convex's Fly guide, so /http/... goes there too). It
// records every request it serves, so that a test can tell which Node callbacks crossed it,
// and can add latency each way.
//
// Typical use: built by build.sh into a FROM-scratch image; internal/dockertest runs it on a
// user-defined Docker network, with the network alias convex.example.test where the backend
// must reach its public name (hairpin) and without it where it must not (upstream issue #386).
//
// Environment:
//
//	EDGE_HOSTS       names in its certificate, comma-separated (default convex.example.test)
//	EDGE_UPSTREAM    URL every request is proxied to (http://backend:3210); empty: it answers
//	                 each request itself with "edge <host>: <method> <path>", an "other host"
//	EDGE_LATENCY     added before the request goes upstream and again before the response
//	                 goes back (Go duration, default 0)
//	EDGE_TLS_ADDR    HTTPS listen address (default :443)
//	EDGE_HTTP_ADDR   plain HTTP listen address, same handler (default :80)
//	EDGE_ADMIN_ADDR  the test's own port, never recorded (default :9090):
//	                   GET /ca.pem       the CA certificate, for NODE_EXTRA_CA_CERTS
//	                   GET /requests     every request served so far, JSON
//	                   POST /latency?each_way=D  sets EDGE_LATENCY
//
// It logs one line per request to stdout: "edge: GET https://convex.example.test/version
// from 172.18.0.3:41234".
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("edge: ")
	if err := run(os.Getenv); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(getenv func(string) string) error {
	hosts := strings.Split(or(getenv("EDGE_HOSTS"), "convex.example.test"), ",")
	caPEM, cert, err := newCertificates(hosts)
	if err != nil {
		return err
	}
	e, err := newEdge(getenv("EDGE_UPSTREAM"))
	if err != nil {
		return err
	}
	if v := getenv("EDGE_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("parse EDGE_LATENCY %q: want a Go duration such as 2ms", v)
		}
		e.latency.Store(int64(d))
	}
	// Listen on all three before the "serving" line, which tests wait for.
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	servers := []struct {
		what, addr string
		h          http.Handler
		tls        *tls.Config
	}{
		{"https", or(getenv("EDGE_TLS_ADDR"), ":443"), e, tlsConf},
		{"http", or(getenv("EDGE_HTTP_ADDR"), ":80"), e, nil},
		{"admin", or(getenv("EDGE_ADMIN_ADDR"), ":9090"), e.admin(caPEM), nil},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("listen %s %s: %w", s.what, s.addr, err)
		}
		if s.tls != nil {
			ln = tls.NewListener(ln, s.tls)
		}
		go func() { errc <- fmt.Errorf("serve %s %s: %w", s.what, s.addr, http.Serve(ln, s.h)) }()
	}
	log.Printf("serving %s on %s (https) and %s (http), upstream %q, latency %s each way; admin on %s",
		strings.Join(hosts, ","), servers[0].addr, servers[1].addr, e.upstream, time.Duration(e.latency.Load()), servers[2].addr)
	return <-errc
}

// Request is one request the edge served, as GET /requests lists it.
type Request struct {
	Method string `json:"method"`
	URL    string `json:"url"` // scheme://host/path?query as the client asked for it
	From   string `json:"from"`
}

type edge struct {
	upstream string
	proxy    *httputil.ReverseProxy // nil: answer each request itself
	latency  atomic.Int64           // time.Duration, each way

	mu   sync.Mutex
	seen []Request
}

func newEdge(upstream string) (*edge, error) {
	e := &edge{upstream: upstream}
	if upstream == "" {
		return e, nil
	}
	target, err := url.Parse(upstream)
	if err != nil || target.Host == "" || (target.Scheme != "http" && target.Scheme != "https") {
		return nil, fmt.Errorf("parse EDGE_UPSTREAM %q: want an http:// URL such as http://backend:3210", upstream)
	}
	e.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			r.Out.Host = r.In.Host // the public name, as Fly's proxy and ingresses pass it
		},
		FlushInterval: -1, // stream both ways
		ModifyResponse: func(*http.Response) error {
			time.Sleep(time.Duration(e.latency.Load()))
			return nil
		},
	}
	return e, nil
}

func (e *edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	req := Request{Method: r.Method, URL: scheme + "://" + r.Host + r.URL.RequestURI(), From: r.RemoteAddr}
	e.mu.Lock()
	e.seen = append(e.seen, req)
	e.mu.Unlock()
	log.Printf("%s %s from %s", req.Method, req.URL, req.From)
	time.Sleep(time.Duration(e.latency.Load()))
	if e.proxy == nil {
		io.Copy(io.Discard, r.Body)
		time.Sleep(time.Duration(e.latency.Load()))
		fmt.Fprintf(w, "edge %s: %s %s\n", r.Host, r.Method, r.URL.RequestURI())
		return
	}
	e.proxy.ServeHTTP(w, r)
}

func (e *edge) admin(caPEM []byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(caPEM)
	})
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		seen := append([]Request{}, e.seen...)
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen)
	})
	mux.HandleFunc("POST /latency", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("each_way"))
		if err != nil || d < 0 {
			http.Error(w, fmt.Sprintf("each_way=%q: want a Go duration such as 2ms", r.URL.Query().Get("each_way")), http.StatusBadRequest)
			return
		}
		e.latency.Store(int64(d))
		log.Printf("latency now %s each way", d)
	})
	return mux
}

// newCertificates makes a CA and a certificate it signs for hosts, both valid for a day. Made
// fresh at each start and never written down: no key is ever committed or left on disk.
func newCertificates(hosts []string) (caPEM []byte, cert tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, fmt.Errorf("generate the CA key: %w", err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "convex-shim e2e edge test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, cert, fmt.Errorf("create the CA certificate: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, cert, fmt.Errorf("parse the CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, fmt.Errorf("generate the server key: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: hosts[0]},
		DNSNames:     hosts,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, cert, fmt.Errorf("create the certificate for %s: %w", strings.Join(hosts, ","), err)
	}
	cert = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), cert, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

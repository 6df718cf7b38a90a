// An API behind Application Gateway that authorises callers by client certificate, with the Go
// standard library only.
//
// The gateway forwards the client's leaf in X-Client-Cert as URL-encoded PEM
// ({var_client_certificate}); the header is absent when no certificate was sent. Without it the
// API answers 401. It percent-decodes the header with url.PathUnescape (url.QueryUnescape would
// turn '+' into a space), parses the PEM and verifies it against the CA chain it trusts, for
// client authentication: 403 when that fails (expired, not yet valid, another CA, wrong extended
// key usage). Behind Strict the gateway checked this already; behind Passthrough nothing did.
// Then it authorises by subject CN (-allow CN=ROLE), 403 otherwise. Run it with
//
//	go run . -port 8083 -trust-ca certs/trusted-client-ca-chain.pem -allow NAME=reader
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const certHeader = "X-Client-Cert"

type denied struct {
	status int
	reason string
}

func (d *denied) Error() string { return d.reason }

type allowList map[string]string

func (a allowList) String() string { return fmt.Sprint(map[string]string(a)) }

func (a allowList) Set(value string) error {
	cn, role, found := strings.Cut(value, "=")
	if !found {
		return errors.New("expected CN=ROLE")
	}
	a[cn] = role
	return nil
}

type gate struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	allow         allowList
}

func loadGate(path string, allow allowList) (*gate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	g := &gate{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), allow: allow}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		if string(cert.RawSubject) == string(cert.RawIssuer) {
			g.roots.AddCert(cert)
		} else {
			g.intermediates.AddCert(cert)
		}
	}
	return g, nil
}

func (g *gate) caller(header string) (string, string, error) {
	if header == "" {
		return "", "", &denied{http.StatusUnauthorized, "a client certificate is required"}
	}
	text, err := url.PathUnescape(header)
	if err != nil {
		return "", "", &denied{http.StatusBadRequest, "unreadable client certificate: " + err.Error()}
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return "", "", &denied{http.StatusBadRequest, "unreadable client certificate: no PEM"}
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", "", &denied{http.StatusBadRequest, "unreadable client certificate: " + err.Error()}
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return "", "", &denied{http.StatusForbidden, "client certificate expired"}
	}
	if now.Before(leaf.NotBefore) {
		return "", "", &denied{http.StatusForbidden, "client certificate not yet valid"}
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         g.roots,
		Intermediates: g.intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage {
			return "", "", &denied{http.StatusForbidden, "client certificate not for client authentication"}
		}
		return "", "", &denied{http.StatusForbidden, "client certificate not issued by our CA"}
	}
	cn := leaf.Subject.CommonName
	role, ok := g.allow[cn]
	if !ok {
		return "", "", &denied{http.StatusForbidden, "subject CN=" + cn + " is not allowed"}
	}
	return cn, role, nil
}

func writeJSON(w http.ResponseWriter, status int, document any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(document)
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8083, "port to listen on (0: a free one)")
	trustCa := flag.String("trust-ca", "", "PEM bundle of the client CA chain")
	allow := allowList{}
	flag.Var(allow, "allow", "CN=ROLE of an allowed caller (repeatable)")
	flag.Parse()
	if *trustCa == "" {
		log.Fatal("-trust-ca is required")
	}
	g, err := loadGate(*trustCa, allow)
	if err != nil {
		log.Fatalf("cannot load %s: %v", *trustCa, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		cn, role, err := g.caller(r.Header.Get(certHeader))
		var refusal *denied
		if errors.As(err, &refusal) {
			writeJSON(w, refusal.status, map[string]string{"error": refusal.reason})
			return
		}
		if r.URL.Path != "/orders" {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such resource"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"caller": cn,
			"role":   role,
			"orders": []map[string]any{{"id": 1, "item": "widget", "qty": 3}, {"id": 2, "item": "gadget", "qty": 1}},
		})
	})
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ready: go orders API http://%s/orders\n", listener.Addr())
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.Serve(listener))
}

package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestServingVerifies: a serving certificate verifies against its CA for
// each of its hosts and not for another, and not against another CA; Write
// puts a loadable key pair where a Secret volume would.
func TestServingVerifies(t *testing.T) {
	ca := NewCA(t)
	pair := ca.Serving(t, "127.0.0.1", "localhost", "svc.ns.svc")
	dir := t.TempDir()
	pair.Write(t, dir)
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caFile) {
		t.Fatal("ca.crt is not a PEM certificate")
	}
	for _, tc := range []struct {
		host  string
		roots *x509.CertPool
		ok    bool
	}{
		{"127.0.0.1", pool, true},
		{"localhost", ca.Pool(), true},
		{"svc.ns.svc", pool, true},
		{"other.example", pool, false},
		{"127.0.0.1", NewCA(t).Pool(), false},
	} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: tc.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != tc.ok {
			t.Errorf("verify for %s: %v, want ok=%v", tc.host, err, tc.ok)
		}
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || leaf.Subject.CommonName != "127.0.0.1" {
		t.Errorf("IPs %v, CN %q", leaf.IPAddresses, leaf.Subject.CommonName)
	}
}

// TestClientVerifies: a client certificate carries its CN and groups,
// verifies for client auth against its CA only, and not for serving.
func TestClientVerifies(t *testing.T) {
	ca := NewCA(t)
	pair := ca.Client(t, "front-proxy-client", "system:masters")
	leaf, err := x509.ParseCertificate(pair.TLS(t).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "front-proxy-client" || len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != "system:masters" ||
		len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 {
		t.Errorf("subject %v, DNS %v, IPs %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses)
	}
	for _, tc := range []struct {
		roots *x509.CertPool
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{ca.Pool(), x509.ExtKeyUsageClientAuth, true},
		{ca.Pool(), x509.ExtKeyUsageServerAuth, false},
		{NewCA(t).Pool(), x509.ExtKeyUsageClientAuth, false},
	} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: tc.roots, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("verify for usage %v: %v, want ok=%v", tc.usage, err, tc.ok)
		}
	}
}

// Package certs makes the certificates tests need: a CA generated for the
// test and the serving and client certificates it signs, PEM-encoded, valid
// from an hour ago for a day (ECDSA P-256).
//
//	ca := certs.NewCA(t)
//	pair := ca.Serving(t, "127.0.0.1", "localhost")
//	pair.Write(t, dir) // dir/tls.crt, dir/tls.key, dir/ca.crt
//	client := ca.Client(t, "front-proxy-client") // client auth, CN only
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Validity of every certificate, counted from now.
const (
	notBeforeSkew = time.Hour
	validFor      = 24 * time.Hour
)

// CA is a certificate authority generated for a test.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertPEM is Cert, PEM-encoded (what goes into a caBundle or ca.crt).
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// Pair is a serving or client certificate and its key, PEM-encoded, with the PEM of
// the CA that signed it.
type Pair struct {
	CertPEM, KeyPEM, CAPEM []byte
}

// NewCA generates a CA named "dumpcatcher test CA".
func NewCA(t testing.TB) *CA {
	t.Helper()
	return NewNamedCA(t, "dumpcatcher test CA")
}

// NewNamedCA generates a CA with the common name cn.
func NewNamedCA(t testing.TB, cn string) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-notBeforeSkew),
		NotAfter:              now.Add(validFor),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating the CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, CertPEM: pemOf("CERTIFICATE", der), key: key}
}

// Pool is a pool holding only the CA, for a client's RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Serving signs a serving certificate (server auth) for hosts, IP addresses
// or DNS names; the first is also its common name.
func (ca *CA) Serving(t testing.TB, hosts ...string) Pair {
	t.Helper()
	if len(hosts) == 0 {
		t.Fatal("certs: Serving needs at least one host")
	}
	tmpl := ca.leaf(t, hosts[0], x509.ExtKeyUsageServerAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.sign(t, tmpl)
}

// Client signs a client certificate (client auth) with the common name cn
// (the user name a Kubernetes API server reads from it) and organizations
// orgs (its groups).
func (ca *CA) Client(t testing.TB, cn string, orgs ...string) Pair {
	t.Helper()
	tmpl := ca.leaf(t, cn, x509.ExtKeyUsageClientAuth)
	tmpl.Subject.Organization = orgs
	return ca.sign(t, tmpl)
}

// TLS is the pair as a tls.Certificate (for a tls.Config's Certificates).
func (p Pair) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *CA) leaf(t testing.TB, cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-notBeforeSkew),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

func (ca *CA) sign(t testing.TB, tmpl *x509.Certificate) Pair {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("creating the certificate of %q: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Pair{CertPEM: pemOf("CERTIFICATE", der), KeyPEM: pemOf("PRIVATE KEY", keyDER), CAPEM: ca.CertPEM}
}

// Write writes the pair into dir as a kubernetes.io/tls Secret volume holds
// it: tls.crt, tls.key and ca.crt (mode 0600).
func (p Pair) Write(t testing.TB, dir string) {
	t.Helper()
	p.WriteAs(t, dir, "tls.crt", "tls.key", "ca.crt")
}

// WriteAs writes the certificate, key and CA into dir under the names given
// (an empty name skips that file), each mode 0600.
func (p Pair) WriteAs(t testing.TB, dir, certName, keyName, caName string) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{certName, p.CertPEM}, {keyName, p.KeyPEM}, {caName, p.CAPEM}} {
		if f.name == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// serial is a random 128-bit serial number, so that certificates of one
// test never share one.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

package redistest

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

// SingleTLS starts a stand-alone server that speaks TLS only, with a
// certificate for 127.0.0.1 from a CA made for it; CAFile is that CA's PEM
// file and TLS a client configuration trusting it. Clients are not asked
// for certificates.
func SingleTLS(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, "redis-tls", opts...)
	ca, err := writeCerts(s.Dir)
	if err != nil {
		t.Fatalf("redistest: certificates: %v", err)
	}
	s.CAFile = filepath.Join(s.Dir, "ca.pem")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	s.conf = append(s.conf,
		"tls-cert-file "+s.serverPath(filepath.Join(s.Dir, "cert.pem")),
		"tls-key-file "+s.serverPath(filepath.Join(s.Dir, "key.pem")),
		"tls-ca-cert-file "+s.serverPath(s.CAFile),
		"tls-auth-clients no",
	)
	s.startFresh()
	return s
}

func writeCerts(dir string) (*x509.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	files := map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: leafDER},
		"key.pem":  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

package host

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrNoCertificate: the connector answered the handshake without its TLS certificate, so the
// host cannot authenticate it; it is refused rather than spoken to in plaintext.
var ErrNoCertificate = errors.New("no TLS certificate in its handshake")

// clientCertEnv is where go-plugin's servers (and any connector) look for the host's certificate.
const clientCertEnv = "PLUGIN_CLIENT_CERT"

// clientCertValidity bounds the certificate of one launch. It only has to outlive that one
// process's TLS handshakes: the connection is set up once and kept alive by health checks, and
// a reconnect after expiry fails, which the supervisor handles as a crash (restart, fresh cert).
const clientCertValidity = 30 * 24 * time.Hour

// newClientTLS does what go-plugin's AutoMTLS does for the host side, but with an ECDSA P-256
// key: go-plugin's is P-521, which BoringSSL (grpcio, grpc-java's default, ...) refuses, and
// connectors in other languages must be able to verify it. It returns the TLS config to dial
// the connector with and the certificate's PEM for its PLUGIN_CLIENT_CERT. go-plugin fills
// RootCAs and ClientCAs with the certificate from the connector's handshake line.
func newClientTLS() (*tls.Config, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate client key: %w", err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial number: %w", err)
	}
	now := time.Now()
	// Shaped like go-plugin's generateCert (mtls.go): the connector trusts exactly this
	// certificate, so it is its own CA, and "localhost" is the name both sides verify.
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"flowd"}},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             now.Add(-30 * time.Second),
		NotAfter:              now.Add(clientCertValidity),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse client certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		ServerName:   "localhost",
	}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

package host

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
)

// plaintextEnv makes the test binary act as a connector that ignores the host's certificate
// and answers the handshake without one, serving plaintext gRPC.
const plaintextEnv = "FLOWD_HOST_PLAINTEXT_PLUGIN"

func plaintextPlugin() {
	// go-plugin's server does AutoMTLS only when it finds the host's certificate here.
	_ = os.Unsetenv(clientCertEnv)
	sdk.Serve(sdk.Connector{
		Manifest: sdk.Manifest{Name: "plaintext", Version: "1.0.0"},
		Actions: map[string]sdk.Handler{
			"echo": sdk.Action(sdk.ActionSpec{Title: "Echo"}, func(_ context.Context, call sdk.Call[any, any]) ([]sdk.Output, error) {
				return []sdk.Output{{Data: call.Input}}, nil
			}),
		},
	})
}

func TestClientCertificate(t *testing.T) {
	cfg, certPEM, err := newClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("PEM %q: want exactly one certificate", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// P-256, not go-plugin's P-521: BoringSSL-based connectors (grpcio) refuse P-521.
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T: want ECDSA P-256", cert.PublicKey)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "localhost" || !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
		t.Fatalf("certificate %+v: want a self-signed CA for localhost", cert.Subject)
	}
	if now := time.Now(); cert.NotBefore.After(now) || cert.NotAfter.Sub(now) > clientCertValidity {
		t.Fatalf("validity %s..%s: want now..+%s", cert.NotBefore, cert.NotAfter, clientCertValidity)
	}
	// The certificate the plugin is told about is the one the host presents.
	if len(cfg.Certificates) != 1 || !bytes.Equal(cfg.Certificates[0].Certificate[0], block.Bytes) {
		t.Fatal("TLS config presents another certificate than the PEM handed to the plugin")
	}
	if !cfg.Certificates[0].PrivateKey.(*ecdsa.PrivateKey).PublicKey.Equal(cert.PublicKey) {
		t.Fatal("private key does not match the certificate")
	}
	if cfg.ServerName != "localhost" || cfg.RootCAs != nil {
		t.Fatalf("config: server name %q, roots %v: want localhost and none until the handshake", cfg.ServerName, cfg.RootCAs)
	}

	// Fresh per launch.
	_, other, err := newClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, certPEM) {
		t.Fatal("two launches got the same certificate")
	}
}

// TestPluginWithoutCertificateIsRefused: a connector that answers the handshake without a
// certificate is not spoken to in plaintext.
func TestPluginWithoutCertificateIsRefused(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "plaintext")); err != nil {
		t.Fatal(err)
	}
	h, logs := newHost(t, Options{Dir: dir, Env: []string{plaintextEnv + "=1"}})
	_, err = h.Manifest(ctxT(t), "plaintext")
	if !errors.Is(err, ErrNoCertificate) || !strings.Contains(err.Error(), clientCertEnv) {
		t.Fatalf("err %v, want %v naming %s", err, ErrNoCertificate, clientCertEnv)
	}
	if e := sdk.AsError(err); e.Retryable {
		t.Fatalf("err %v is retryable: want a refusal", err)
	}
	// Refused again at once, like a binary that fails its pin.
	if _, err := h.Manifest(ctxT(t), "plaintext"); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("second call: %v", err)
	}
	if strings.Contains(logs.String(), "connector started") {
		t.Fatalf("the plaintext connector was used:\n%s", logs)
	}
}

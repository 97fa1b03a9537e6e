package kafkax_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/kafkax"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSigned returns a PEM certificate and its PEM key.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flowd-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func TestSecurityOffByDefault(t *testing.T) {
	cfg := kafkax.Config{Brokers: []string{"127.0.0.1:1"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, tr := cfg.Dialer(), cfg.Transport()
	if d.SASLMechanism != nil || d.TLS != nil || d.DialFunc != nil || tr.SASL != nil || tr.TLS != nil || tr.Dial != nil {
		t.Fatalf("plaintext config: dialer %+v transport %+v", d, tr)
	}
}

func TestSASLMechanisms(t *testing.T) {
	pwFile := writeFile(t, "pw", "s3cret\n")
	for _, mech := range []string{"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "scram-sha-512"} {
		cfg := kafkax.Config{Brokers: []string{"b:9092"}, SASL: kafkax.SASL{Mechanism: mech, Username: "flowd", PasswordFile: pwFile}}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
		d, tr, w := cfg.Dialer(), cfg.Transport(), kafkax.NewWriter(cfg)
		if d.SASLMechanism == nil || !strings.EqualFold(d.SASLMechanism.Name(), mech) {
			t.Errorf("%s: dialer mechanism %v", mech, d.SASLMechanism)
		}
		if tr.SASL == nil || !strings.EqualFold(tr.SASL.Name(), mech) {
			t.Errorf("%s: transport mechanism %v", mech, tr.SASL)
		}
		if wt, ok := w.Transport.(interface{ CloseIdleConnections() }); !ok || wt == nil {
			t.Errorf("%s: writer without a transport", mech)
		}
	}
}

// Writers share one transport per setting: the same credentials reuse it, others never do.
func TestWriterTransportKeyedBySecurity(t *testing.T) {
	a := kafkax.Config{Brokers: []string{"b:9092"}, SASL: kafkax.SASL{Mechanism: "PLAIN", Username: "a", Password: "x"}}
	b := a
	b.SASL.Username = "b"
	if kafkax.NewWriter(a).Transport != kafkax.NewWriter(a).Transport {
		t.Error("the same settings got two transports")
	}
	if kafkax.NewWriter(a).Transport == kafkax.NewWriter(b).Transport {
		t.Error("different credentials share a transport")
	}
	if kafkax.NewWriter(kafkax.Config{}).Transport == kafkax.NewWriter(a).Transport {
		t.Error("plaintext and SASL share a transport")
	}
}

func TestUnusableSecurityFailsEveryConnection(t *testing.T) {
	pw := writeFile(t, "pw", "x")
	notPEM := writeFile(t, "ca.pem", "not a certificate")
	for name, cfg := range map[string]kafkax.Config{
		"unknown mechanism":     {SASL: kafkax.SASL{Mechanism: "GSSAPI", Username: "u", Password: "p"}},
		"no password":           {SASL: kafkax.SASL{Mechanism: "SCRAM-SHA-512", Username: "u"}},
		"no username":           {SASL: kafkax.SASL{Mechanism: "SCRAM-SHA-512", Password: "p"}},
		"password twice":        {SASL: kafkax.SASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p", PasswordFile: pw}},
		"missing password file": {SASL: kafkax.SASL{Mechanism: "SCRAM-SHA-512", Username: "u", PasswordFile: pw + ".missing"}},
		"ca without tls":        {TLS: kafkax.TLS{CAFile: notPEM}},
		"ca not pem":            {TLS: kafkax.TLS{Enabled: true, CAFile: notPEM}},
		"cert without key":      {TLS: kafkax.TLS{Enabled: true, CertFile: notPEM}},
	} {
		cfg.Brokers = []string{"127.0.0.1:1"}
		err := cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate passed", name)
			continue
		}
		if strings.Contains(err.Error(), `"p"`) || strings.Contains(err.Error(), " p ") {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
		// Used anyway, the settings fail each connection with the reason rather than
		// connecting without them.
		if _, derr := cfg.Dialer().DialContext(context.Background(), "tcp", "127.0.0.1:1"); derr == nil || !strings.Contains(derr.Error(), err.Error()) {
			t.Errorf("%s: dialer: %v", name, derr)
		}
		if tr := cfg.Transport(); tr.Dial == nil {
			t.Errorf("%s: transport would dial", name)
		} else if _, terr := tr.Dial(context.Background(), "tcp", "127.0.0.1:1"); terr == nil || !errors.Is(terr, err) && terr.Error() != err.Error() {
			t.Errorf("%s: transport: %v", name, terr)
		}
	}
}

func TestTLSFiles(t *testing.T) {
	cert, key := selfSigned(t)
	ca, certFile, keyFile := writeFile(t, "ca.pem", cert), writeFile(t, "c.pem", cert), writeFile(t, "k.pem", key)
	cfg := kafkax.Config{Brokers: []string{"b:9093"}, TLS: kafkax.TLS{Enabled: true, CAFile: ca, CertFile: certFile, KeyFile: keyFile, ServerName: "kafka.internal"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tc := cfg.Transport().TLS
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "kafka.internal" || tc.InsecureSkipVerify || tc.MinVersion == 0 {
		t.Fatalf("tls config %+v", tc)
	}
	if d := cfg.Dialer(); d.TLS != tc {
		t.Error("dialer and transport built different TLS configs")
	}
	// Enabled alone trusts the system roots.
	plain := kafkax.Config{Brokers: []string{"b:9093"}, TLS: kafkax.TLS{Enabled: true}}
	if tc := plain.Transport().TLS; tc == nil || tc.RootCAs != nil {
		t.Fatalf("tls without CA file: %+v", tc)
	}
}

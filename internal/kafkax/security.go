package kafkax

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms flowd speaks to brokers.
const (
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismPlain       = "PLAIN"
)

// SASL says how flowd authenticates to the brokers. A zero SASL is no authentication.
type SASL struct {
	Mechanism    string // SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN; "" is off
	Username     string
	Password     string // kept out of flags: env or PasswordFile
	PasswordFile string // read at start; setting both is an error
}

// TLS says how flowd encrypts its broker connections. A zero TLS is plaintext.
type TLS struct {
	Enabled    bool
	CAFile     string // PEM bundle trusted instead of the system roots when set
	CertFile   string // client certificate (PEM) for mutual TLS, with KeyFile
	KeyFile    string
	ServerName string // overrides the name checked in the broker certificate
	// InsecureSkipVerify accepts any broker certificate. Only for a test cluster: it gives up
	// the protection TLS exists for, so it has a flag of its own and is logged at start.
	InsecureSkipVerify bool
}

// Enabled tells whether SASL is configured.
func (s SASL) Enabled() bool { return s.Mechanism != "" }

// security is what Dialer and Transport hand kafka-go, built once per distinct setting.
type security struct {
	mech sasl.Mechanism
	tls  *tls.Config
	err  error
}

type securityKey struct {
	sasl SASL
	tls  TLS
}

var (
	secMu    sync.Mutex
	secCache = map[securityKey]*security{}
)

// security builds (once per setting, files read once) the SASL mechanism and TLS config.
func (c Config) security() *security {
	k := securityKey{c.SASL, c.TLS}
	secMu.Lock()
	defer secMu.Unlock()
	if s, ok := secCache[k]; ok {
		return s
	}
	s := &security{}
	s.mech, s.err = buildSASL(c.SASL)
	if s.err == nil {
		s.tls, s.err = buildTLS(c.TLS)
	}
	secCache[k] = s
	return s
}

// Validate reports a security setting that cannot be used (unknown mechanism, unreadable
// password, CA or key file), so a role fails at start rather than at its first connection.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 || (len(c.Brokers) == 1 && strings.TrimSpace(c.Brokers[0]) == "") {
		return errors.New("kafkax: no brokers configured")
	}
	return c.security().err
}

func buildSASL(s SASL) (sasl.Mechanism, error) {
	if !s.Enabled() {
		return nil, nil
	}
	password := s.Password
	if s.PasswordFile != "" && password != "" {
		return nil, errors.New("kafkax: sasl password given both directly and in a file: use one")
	}
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("kafkax: sasl password file: %w", err)
		}
		// Secret files usually end in a newline that is not part of the password.
		password = strings.TrimRight(string(b), "\r\n")
	}
	if s.Username == "" || password == "" {
		return nil, fmt.Errorf("kafkax: sasl %s needs a username and a password", s.Mechanism)
	}
	switch strings.ToUpper(s.Mechanism) {
	case MechanismScramSHA512:
		m, err := scram.Mechanism(scram.SHA512, s.Username, password)
		if err != nil {
			return nil, fmt.Errorf("kafkax: sasl %s: %w", s.Mechanism, err)
		}
		return m, nil
	case MechanismScramSHA256:
		m, err := scram.Mechanism(scram.SHA256, s.Username, password)
		if err != nil {
			return nil, fmt.Errorf("kafkax: sasl %s: %w", s.Mechanism, err)
		}
		return m, nil
	case MechanismPlain:
		return plain.Mechanism{Username: s.Username, Password: password}, nil
	default:
		return nil, fmt.Errorf("kafkax: unknown sasl mechanism %q (want %s, %s or %s)",
			s.Mechanism, MechanismScramSHA512, MechanismScramSHA256, MechanismPlain)
	}
}

func buildTLS(t TLS) (*tls.Config, error) {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify {
			// Files given without TLS on are a mistake that would silently send in the clear.
			return nil, errors.New("kafkax: TLS files or options are set but TLS is not enabled")
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, logged
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafkax: tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafkax: tls ca file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("kafkax: tls client certificate and key go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafkax: tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// failDial stands in for the network when the security settings are unusable: every
// connection attempt returns the reason instead of silently connecting without them.
func failDial(err error) func(context.Context, string, string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) { return nil, err }
}

// Dialer is the one way flowd's kafka-go readers (ReaderConfig.Dialer) and direct connections
// reach the brokers, with the configured SASL and TLS.
func (c Config) Dialer() *kafka.Dialer {
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, ClientID: "flowd"}
	s := c.security()
	if s.err != nil {
		d.DialFunc = failDial(s.err)
		return d
	}
	d.SASLMechanism, d.TLS = s.mech, s.tls
	return d
}

// Transport returns a new transport for kafka.Client and kafka.Writer with the configured SASL
// and TLS. The caller owns it (CloseIdleConnections when done) and may set metadata options.
func (c Config) Transport() *kafka.Transport {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second, ClientID: "flowd"}
	s := c.security()
	if s.err != nil {
		tr.Dial = failDial(s.err)
		return tr
	}
	tr.SASL, tr.TLS = s.mech, s.tls
	return tr
}

// writerTransports are the process-wide transports of NewWriter, one per security setting.
// kafka.Writer.Close only closes a transport it created itself, so a per-writer transport would
// leak its metadata goroutine; one per process (per credentials) is what kafka.DefaultTransport
// does too, with our timeouts.
var (
	writerMu         sync.Mutex
	writerTransports = map[securityKey]*kafka.Transport{}
)

func (c Config) writerTransport() *kafka.Transport {
	k := securityKey{c.SASL, c.TLS}
	writerMu.Lock()
	defer writerMu.Unlock()
	if tr, ok := writerTransports[k]; ok {
		return tr
	}
	tr := c.Transport()
	// A writer fails at once with UnknownTopicOrPartition for a topic missing from this cache
	// (auto-creation is off), so keep it fresher than the 6 s default.
	tr.MetadataTTL = time.Second
	writerTransports[k] = tr
	return tr
}

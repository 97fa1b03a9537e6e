package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/flowd/flowd/connectors/sdk"
	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/metrics"
)

// supervisor owns the process of one connector: it starts it on demand (one start at a time,
// shared by every caller waiting), notices when it dies, and spaces restarts with backoff.
// go-plugin does not restart a dead plugin; this does.
type supervisor struct {
	h     *Host
	name  string
	path  string
	id    [sha256.Size]byte // identity of what path runs when discovered (Reload compares it)
	pin   []byte            // from the pin file; nil when it does not list the connector
	log   *slog.Logger
	calls sync.WaitGroup // calls in flight (Host.acquire), which a replaced connector drains

	mu          sync.Mutex
	stopped     bool        // shut down (host closed, or replaced by a reload): starts nothing more
	cur         *instance   // nil when not running
	round       *startRound // the start in progress, if any
	failures    int         // consecutive failures (crashes, failed starts, failed health checks)
	lastFailure time.Time
	lastErr     error
	died        bool           // an instance died: the next start is a restart (metrics)
	kills       sync.WaitGroup // kills of dead instances still running
}

// errReplaced: a call waited on a connector that a reload replaced or removed meanwhile.
var errReplaced = errors.New("it was replaced or removed by a reload while the call waited")

type startRound struct {
	done chan struct{}
	err  error // set before done closes
}

// instance is one running plugin process.
type instance struct {
	client   *plugin.Client
	rpc      connectorv1.ConnectorClient
	health   healthpb.HealthClient
	manifest sdk.Manifest
	raw      map[string][]string // action -> config fields it marks raw (sdk.RawFields)
	schemas  *sdk.Schemas        // what every call is checked against (validate.go)
	started  time.Time
	pid      int
}

// get returns the running instance, starting it when needed.
func (s *supervisor) get(ctx context.Context) (*instance, error) {
	for {
		if s.h.closed.Load() {
			return nil, ErrClosed
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return nil, s.unavailable(errReplaced)
		}
		if inst := s.cur; inst != nil {
			if !inst.client.Exited() {
				s.mu.Unlock()
				return inst, nil
			}
			s.failLocked(inst, errors.New("process exited"))
		}
		round := s.round
		if round == nil {
			if wait := s.backoffLocked(); wait > 0 {
				lastErr := s.lastErr
				s.mu.Unlock()
				if isPermanent(lastErr) {
					// A refused binary stays refused until it changes; say so at once.
					return nil, lastErr
				}
				if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
					return nil, s.unavailable(fmt.Errorf("restarting in %s after: %w", wait.Round(time.Millisecond), lastErr))
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, fmt.Errorf("connector %q: waiting to restart: %w", s.name, ctx.Err())
				}
				continue
			}
			round = &startRound{done: make(chan struct{})}
			s.round = round
			go s.start(round)
		}
		s.mu.Unlock()
		select {
		case <-round.done:
			if round.err != nil {
				return nil, round.err
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("connector %q: waiting for start: %w", s.name, ctx.Err())
		}
	}
}

// start runs one start attempt and publishes its outcome to everyone waiting on round.
func (s *supervisor) start(round *startRound) {
	inst, err := s.launch()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(round.done)
	s.round = nil
	if err == nil && (s.h.closed.Load() || s.stopped) {
		// Stopped while starting: what started must not outlive the shutdown.
		s.killAsyncLocked(inst)
		round.err = ErrClosed
		if !s.h.closed.Load() {
			round.err = s.unavailable(errReplaced)
		}
		return
	}
	metrics.PluginStarted(s.name, err, s.died)
	if err != nil {
		s.failures++
		s.lastFailure = time.Now()
		s.lastErr = err
		round.err = err
		s.log.Error("connector failed to start", "err", err, "failures", s.failures)
		return
	}
	s.cur = inst
	s.died = false
	s.log.Info("connector started", "pid", inst.pid, "version", inst.manifest.Version)
}

// launch starts the process, completes the handshake and loads the manifest.
func (s *supervisor) launch() (*instance, error) {
	opts := &s.h.opts
	secure, err := s.checkPin()
	if err != nil {
		return nil, err
	}
	tlsConf, certPEM, err := newClientTLS()
	if err != nil {
		return nil, s.unavailable(err)
	}
	cmd := exec.Command(s.path)
	// Last, so that no Options.Env entry can replace the certificate.
	cmd.Env = append(pluginEnv(opts.Env), clientCertEnv+"="+string(certPEM))
	cmd.SysProcAttr = sysProcAttr()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: sdk.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			sdk.ProtocolVersion: {sdk.PluginName: &clientPlugin{}},
		},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		TLSConfig:        tlsConf, // not AutoMTLS: see newClientTLS
		SkipHostEnv:      true,    // connectors get pluginEnv, never the runner's secrets
		StartTimeout:     opts.StartTimeout,
		Logger:           newHCLogger(s.log),
		SyncStdout:       &lineLogger{log: s.log, stream: "stdout"},
		SyncStderr:       &lineLogger{log: s.log, stream: "stderr"},
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdk.MaxMessageSize),
			grpc.MaxCallSendMsgSize(sdk.MaxMessageSize),
		)},
	})
	// Start runs the handshake; the gRPC connection is only made by Client, after the check below.
	if _, err := client.Start(); err != nil {
		client.Kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("connector %q: %w: %s differs from the sha256 %s pinned in %s: refusing to start it",
				s.name, ErrChecksumMismatch, s.path, hex.EncodeToString(secure.Checksum), opts.PinFile)
		}
		return nil, s.unavailable(fmt.Errorf("start %s: %w", s.path, err))
	}
	// go-plugin sets RootCAs from the handshake's certificate field. Without one it would still
	// dial TLS, but trusting the system roots and failing later with an obscure handshake error:
	// refuse here, with the reason.
	if tlsConf.RootCAs == nil {
		// client.Kill dials it to ask for a shutdown: trust nothing, and spare it the 2s grace.
		tlsConf.RootCAs = x509.NewCertPool()
		_ = cmd.Process.Kill()
		client.Kill()
		return nil, fmt.Errorf("connector %q: %w: it must serve TLS with its own certificate and accept only the host's (%s): refusing to start it",
			s.name, ErrNoCertificate, clientCertEnv)
	}
	proto, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, s.unavailable(fmt.Errorf("connect %s: %w", s.path, err))
	}
	raw, err := proto.Dispense(sdk.PluginName)
	if err != nil {
		client.Kill()
		return nil, s.unavailable(fmt.Errorf("dispense: %w", err))
	}
	conn := raw.(*pluginConn)
	inst := &instance{client: client, rpc: conn.rpc, health: conn.health, started: time.Now()}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	} else {
		inst.pid, _ = strconv.Atoi(client.ID())
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	resp, err := inst.rpc.Describe(ctx, &connectorv1.DescribeRequest{})
	if err != nil {
		client.Kill()
		return nil, s.unavailable(fmt.Errorf("describe: %w", err))
	}
	m, err := validateManifest(s.name, resp.GetManifestJson())
	if err != nil {
		client.Kill()
		return nil, err
	}
	inst.manifest = *m
	inst.raw = rawFields(m)
	if inst.schemas, err = compileSchemas(s.name, m); err != nil {
		client.Kill()
		return nil, err
	}
	return inst, nil
}

// checkPin applies the pin file, when there is one. A binary is checked by go-plugin, on the
// file it executes (the SecureConfig returned). A script is checked here, on its whole package:
// its own hash would not cover the code it runs.
func (s *supervisor) checkPin() (*plugin.SecureConfig, error) {
	pinFile := s.h.opts.PinFile
	if pinFile == "" {
		return nil, nil
	}
	if s.pin == nil {
		return nil, fmt.Errorf("connector %q: %w %s: refusing to start it", s.name, ErrNotPinned, pinFile)
	}
	resolved, script, err := resolveExecutable(s.path)
	if err != nil {
		return nil, s.unavailable(err)
	}
	if !script {
		return &plugin.SecureConfig{Checksum: s.pin, Hash: sha256.New()}, nil
	}
	pkg := filepath.Dir(resolved)
	sum, err := PackageDigest(context.Background(), pkg)
	if err != nil {
		return nil, fmt.Errorf("connector %q: %w: the digest of its package %s failed: %w: refusing to start it", s.name, ErrChecksumMismatch, pkg, err)
	}
	if !bytes.Equal(sum, s.pin) {
		return nil, fmt.Errorf("connector %q: %w: its package %s (the folder of the script %s) has digest %x, not the %x pinned in %s: refusing to start it",
			s.name, ErrChecksumMismatch, pkg, resolved, sum, s.pin, pinFile)
	}
	return nil, nil
}

// callError turns a failed gRPC call into the error every item of the call gets. A broken
// connection means the process is gone or useless: it is marked dead so the next call restarts it.
func (s *supervisor) callError(callCtx context.Context, inst *instance, err error) *sdk.Error {
	code := status.Code(err)
	switch {
	case code == codes.DeadlineExceeded || errors.Is(callCtx.Err(), context.DeadlineExceeded):
		return &sdk.Error{Code: CodeDeadline, Message: fmt.Sprintf("connector %s: call deadline exceeded", s.name), Retryable: true}
	case code == codes.ResourceExhausted:
		return &sdk.Error{Code: CodeMessageTooLarge, Message: fmt.Sprintf("connector %s: %s (limit %d bytes)", s.name, status.Convert(err).Message(), sdk.MaxMessageSize)}
	case code == codes.Unavailable || code == codes.Canceled || inst.client.Exited() || !s.healthy(inst):
		s.crashed(inst, err)
		return &sdk.Error{Code: CodeCrashed, Message: fmt.Sprintf("connector %s crashed during the call: %v", s.name, status.Convert(err).Message()), Retryable: true}
	case code == codes.Unimplemented:
		return &sdk.Error{Code: "unimplemented", Message: fmt.Sprintf("connector %s: %s", s.name, status.Convert(err).Message())}
	default:
		return &sdk.Error{Code: CodeConnectorError, Message: fmt.Sprintf("connector %s: %s", s.name, status.Convert(err).Message()), Retryable: true}
	}
}

func (s *supervisor) healthy(inst *instance) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.opts.HealthTimeout)
	defer cancel()
	resp, err := inst.health.Check(ctx, &healthpb.HealthCheckRequest{Service: plugin.GRPCServiceName})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

func (s *supervisor) checkHealth() {
	s.mu.Lock()
	inst := s.cur
	s.mu.Unlock()
	if inst == nil {
		return
	}
	if inst.client.Exited() {
		s.crashed(inst, errors.New("process exited"))
		return
	}
	if !s.healthy(inst) {
		s.crashed(inst, errors.New("health check failed"))
		return
	}
	if time.Since(inst.started) >= s.h.opts.HealthyAfter {
		s.mu.Lock()
		if s.cur == inst {
			s.failures = 0
		}
		s.mu.Unlock()
	}
}

func (s *supervisor) crashed(inst *instance, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(inst, cause)
}

// failLocked retires inst, once, and counts the failure for backoff.
func (s *supervisor) failLocked(inst *instance, cause error) {
	if s.cur != inst {
		return
	}
	s.cur = nil
	s.died = true
	metrics.PluginCrashed(s.name)
	if time.Since(inst.started) >= s.h.opts.HealthyAfter {
		s.failures = 0
	}
	s.failures++
	s.lastFailure = time.Now()
	s.lastErr = s.unavailable(fmt.Errorf("process %d died: %w", inst.pid, cause))
	s.log.Warn("connector died: restarting on next use", "pid", inst.pid, "cause", cause, "failures", s.failures, "backoff", s.backoff(s.failures))
	s.killAsyncLocked(inst)
}

func (s *supervisor) killAsyncLocked(inst *instance) {
	s.kills.Go(inst.client.Kill)
}

// backoffLocked is how long to wait before the next start may begin.
func (s *supervisor) backoffLocked() time.Duration {
	if s.failures == 0 {
		return 0
	}
	return time.Until(s.lastFailure.Add(s.backoff(s.failures)))
}

// backoff is the wait after the given number of failures in a row.
func (s *supervisor) backoff(failures int) time.Duration {
	return backoff.Policy{Initial: s.h.opts.RestartBackoff, Max: s.h.opts.MaxRestartBackoff}.Delay(failures)
}

func (s *supervisor) unavailable(err error) error {
	return fmt.Errorf("connector %q: %w", s.name, &sdk.Error{Code: CodeUnavailable, Message: err.Error(), Retryable: true})
}

// shutdown waits for a start in progress, then kills the process and waits for it to go.
func (s *supervisor) shutdown() {
	s.mu.Lock()
	s.stopped = true // first: a start still running kills what it started
	round := s.round
	s.mu.Unlock()
	if round != nil {
		<-round.done
	}
	s.mu.Lock()
	if inst := s.cur; inst != nil {
		s.cur = nil
		s.killAsyncLocked(inst)
	}
	s.mu.Unlock()
	s.kills.Wait()
}

// isPermanent: errors no restart can fix while the binary stays the same.
func isPermanent(err error) bool {
	return errors.Is(err, ErrNotPinned) || errors.Is(err, ErrChecksumMismatch) || errors.Is(err, ErrInvalidManifest) ||
		errors.Is(err, ErrNoCertificate)
}

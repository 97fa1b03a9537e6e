package host

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/flowd/flowd/connectors/sdk"
	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
)

// clientPlugin is the host side of the go-plugin wiring (the SDK has the server side).
type clientPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

// pluginConn is what Dispense returns: clients sharing the plugin's one gRPC connection, over
// which concurrent calls are multiplexed.
type pluginConn struct {
	rpc    connectorv1.ConnectorClient
	health healthpb.HealthClient
}

func (clientPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host: connectors are served by connectors/sdk")
}

func (clientPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &pluginConn{rpc: connectorv1.NewConnectorClient(c), health: healthpb.NewHealthClient(c)}, nil
}

// envAllowed are the variables a connector inherits from the host. Connectors may run
// third-party code: they must not see the runner's secrets (FLOWD_SECRET_KEY, Redis and Kafka
// credentials), so the environment is an allowlist. FLOWD_CONNECTOR_* is passed through as
// the operators' way to configure connectors.
var envAllowed = []string{
	"PATH", "HOME", "USER", "TMPDIR", "LANG", "LC_ALL", "TZ",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"FLOWD_LOG_LEVEL", "GOCOVERDIR", "GORACE",
	"PYTHONPATH", "VIRTUAL_ENV", "PYENV_ROOT", "PYENV_VERSION",
}

func pluginEnv(extra []string) []string {
	env := []string{sdk.ParentPIDEnv + "=" + strconv.Itoa(os.Getpid())}
	for _, k := range envAllowed {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FLOWD_CONNECTOR_") && !strings.HasPrefix(kv, sdk.ParentPIDEnv+"=") {
			env = append(env, kv)
		}
		if otelPassed(kv) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// otelPassed tells whether an OTEL_* variable reaches connectors, so they export their spans
// where the runner does (connectors/sdk/telemetry). Not the exporter headers, which may hold
// the collector's credentials, nor the service name: a connector is flowd-connector-<name>.
func otelPassed(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	if !strings.HasPrefix(k, "OTEL_") || k == "OTEL_SERVICE_NAME" {
		return false
	}
	return !strings.HasSuffix(k, "_HEADERS")
}

// lineLogger logs what a connector wrote to os.Stdout or os.Stderr after the handshake
// (go-plugin streams it over gRPC), one record per line.
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.log.Info(string(w.buf[:i]), "stream", w.stream)
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a runaway line without newline
		w.log.Info(string(w.buf), "stream", w.stream)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// hcLogger lets go-plugin log through slog. go-plugin parses the plugin's stderr (hclog JSON,
// which the SDK writes) and re-logs each line here with its level and attributes, so plugin logs
// end up in the host's log tagged with the connector's name.
type hcLogger struct {
	log  *slog.Logger
	name string
	args []any
}

func newHCLogger(l *slog.Logger) hclog.Logger { return &hcLogger{log: l} }

var hclogLevels = map[hclog.Level]slog.Level{
	hclog.Trace: slog.LevelDebug - 4,
	hclog.Debug: slog.LevelDebug,
	hclog.Info:  slog.LevelInfo,
	hclog.Warn:  slog.LevelWarn,
	hclog.Error: slog.LevelError,
}

func (l *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	sl, ok := hclogLevels[level]
	if !ok {
		sl = slog.LevelInfo
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, sl) {
		return
	}
	attrs := make([]any, 0, len(l.args)+len(args))
	attrs = append(attrs, l.args...)
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "timestamp" {
			continue // the plugin's own clock: the host's record has its time
		}
		attrs = append(attrs, args[i], args[i+1])
	}
	l.log.Log(ctx, sl, msg, attrs...)
}

func (l *hcLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *hcLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *hcLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *hcLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *hcLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *hcLogger) enabled(level hclog.Level) bool {
	return l.log.Enabled(context.Background(), hclogLevels[level])
}
func (l *hcLogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *hcLogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *hcLogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *hcLogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *hcLogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *hcLogger) ImpliedArgs() []any { return l.args }
func (l *hcLogger) With(args ...any) hclog.Logger {
	return &hcLogger{log: l.log, name: l.name, args: append(append([]any(nil), l.args...), args...)}
}
func (l *hcLogger) Name() string { return l.name }

// Named keeps the slog logger: it already carries the connector's name.
func (l *hcLogger) Named(name string) hclog.Logger {
	if l.name != "" {
		name = l.name + "." + name
	}
	return &hcLogger{log: l.log, name: name, args: l.args}
}
func (l *hcLogger) ResetNamed(name string) hclog.Logger {
	return &hcLogger{log: l.log, name: name, args: l.args}
}
func (l *hcLogger) SetLevel(hclog.Level) {} // the slog handler decides

// GetLevel tells go-plugin which plugin log lines it may skip parsing.
func (l *hcLogger) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if l.enabled(lv) {
			return lv
		}
	}
	return hclog.Error
}

func (l *hcLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(l.log.Handler(), slog.LevelInfo)
}

func (l *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &lineLogger{log: l.log, stream: "log"}
}

// Package devenv starts what `flowd dev` runs beside the roles so a newcomer needs no installs:
// an embedded Kafka-protocol broker (kfake) persisted to the data dir, and a Redis.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowd/flowd/internal/kafkax"
)

// StartBroker starts a one-broker kfake cluster on 127.0.0.1 that keeps topics, records and
// group offsets in dataDir/kafka. The port is remembered in dataDir/kafka.port so a restart
// keeps the same address; if that port is taken a new one is chosen (and remembered).
// Topics are not seeded: callers create them with kafkax.EnsureTopics. stop closes the cluster
// cleanly, which flushes its data; it is safe to call more than once.
func StartBroker(ctx context.Context, dataDir string, log *slog.Logger) (brokers []string, stop func(), err error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("devenv: broker data dir: %w", err)
	}
	portFile := filepath.Join(dataDir, "kafka.port")
	ln, err := listenStable(portFile)
	if err != nil {
		return nil, nil, fmt.Errorf("devenv: broker listener: %w", err)
	}
	// Hand kfake the listener we already hold, so no other process can grab the port between
	// choosing it and binding it.
	handed := false
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DataDir(filepath.Join(dataDir, "kafka")),
		kfake.ClusterID("flowd-dev"),
		kfake.DefaultNumPartitions(kafkax.DefaultPartitions),
		// A developer broker: producing to (or subscribing to) a topic that does not exist
		// creates it, as a fresh Kafka with auto.create.topics.enable does.
		kfake.AllowAutoTopicCreation(),
		kfake.WithLogger(kfakeLogger{log.With("component", "kfake")}),
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if handed {
				return nil, errors.New("devenv: kfake asked for a second listener")
			}
			handed = true
			return ln, nil
		}),
		// No kfake.SyncWrites: like Kafka's default, batches are fsynced on segment roll and on
		// Close; a hard kill of `flowd dev` may lose the last moments, which is fine for dev.
	)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("devenv: start kfake in %s: %w", dataDir, err)
	}
	stop = sync.OnceFunc(c.Close)

	brokers = c.ListenAddrs()
	if err := kafkax.Ping(ctx, kafkax.Config{Brokers: brokers}); err != nil {
		stop()
		return nil, nil, fmt.Errorf("devenv: embedded broker does not answer: %w", err)
	}
	log.Info("embedded kafka broker started", "brokers", strings.Join(brokers, ","),
		"dir", filepath.Join(dataDir, "kafka"))
	return brokers, stop, nil
}

// listenStable listens on the loopback port remembered in portFile, or on a new free port
// (then remembered) when there is none or it is taken.
func listenStable(portFile string) (net.Listener, error) {
	if b, err := os.ReadFile(portFile); err == nil {
		if port, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && port > 0 {
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				return ln, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := writePort(portFile, ln.Addr().(*net.TCPAddr).Port); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// stablePort returns the port remembered in portFile if nothing listens there, otherwise a new
// free port, remembered. For child processes, which must bind the port themselves.
func stablePort(portFile string) (int, error) {
	ln, err := listenStable(portFile)
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

func writePort(portFile string, port int) error {
	tmp := portFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, portFile)
}

// kfakeLogger forwards kfake's logs to slog. kfake's Info level logs every request, so it
// goes to Debug.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	}
	ctx := context.Background()
	if l.log.Enabled(ctx, lvl) {
		l.log.Log(ctx, lvl, fmt.Sprintf(format, args...))
	}
}

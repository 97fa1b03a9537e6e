package sdk

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/flowd/flowd/connectors/sdk/telemetry"
)

// Serve runs the connector and never returns. `<binary> describe` prints the manifest as JSON
// on stdout and exits 0; with no arguments the binary serves the flowd host over go-plugin.
//
// Logs go to stderr through slog (slog.Default is set up here): never print to stdout, which
// belongs to the plugin handshake. Serve redirects it anyway, so a stray print lands on stderr
// instead of breaking the handshake. The process exits when the host stops it, on SIGTERM and
// when its parent dies, calling the connector's Close first.
func Serve(c Connector) {
	os.Exit(serve(c, os.Args[1:]))
}

func serve(c Connector, args []string) int {
	log := newLogger(os.Stderr)
	e, err := newEngine(c, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if len(args) > 0 {
		switch args[0] {
		case "describe":
			out, _ := json.MarshalIndent(e.manifest, "", "  ")
			if _, err := stdout().Write(append(out, '\n')); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			flushStdout()
			return 0
		default:
			fmt.Fprintf(os.Stderr, "usage: %s [describe]\n\n"+
				"%s is a flowd connector: the flowd runners start it as a plugin.\n"+
				"describe prints its manifest as JSON.\n", os.Args[0], e.manifest.Name)
			return 2
		}
	}

	slog.SetDefault(log)
	if err := protectStdout(); err != nil {
		log.Error("redirect stdout", "err", err)
		return 1
	}
	// Spans are exported when the host passed an OTEL_* environment that enables them; the
	// trace context itself arrives with each call either way.
	stop, err := telemetry.Start(context.Background(), "flowd-connector-"+e.manifest.Name)
	if err != nil {
		log.Warn("tracing not started", "err", err)
	}
	e.stopTracing = stop
	dieWithParent(log, e.exit)
	e.exitOnSIGTERM()

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			ProtocolVersion: {PluginName: &grpcPlugin{engine: e}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
			return grpc.NewServer(opts...)
		},
		// go-plugin's own chatter, as hclog JSON the host parses.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.Warn,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
	// plugin.Serve returns when the host closes the connection (go-plugin Kill).
	e.shutdown()
	return 0
}

// newLogger writes JSON with hclog's key names (@message, @level, @timestamp), which the
// go-plugin host parses and re-logs with their level and attributes under the connector's name.
func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if v := os.Getenv("FLOWD_LOG_LEVEL"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				// The exact layout go-plugin parses; any other makes it log the raw line.
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

var (
	guardOnce    sync.Once
	guardErr     error
	realStdout   *os.File      // the process's stdout once guarded; nil before
	filterWriter *os.File      // os.Stdout while guarded
	filterDone   chan struct{} // closed when the filter has copied everything
)

// init guards stdout as early as a connector binary can: a launched plugin (the host set the
// magic cookie) must not print anything before the handshake, not even from main's first line,
// and `describe` must print nothing but the manifest. Otherwise (tests, a person) stdout is
// left alone.
func init() {
	launched := os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue
	describing := len(os.Args) == 2 && os.Args[1] == "describe"
	if launched || describing {
		_ = protectStdout() // Serve reports a failure
	}
}

func protectStdout() error {
	guardOnce.Do(func() {
		realStdout, guardErr = guardStdout(os.Stderr)
	})
	return guardErr
}

// stdout is where the describe output goes: the real stdout even when guarded.
func stdout() *os.File {
	if realStdout != nil {
		return realStdout
	}
	return os.Stdout
}

// flushStdout lets the filter copy what was printed so far before the process exits.
func flushStdout() {
	if filterWriter == nil {
		return
	}
	_ = filterWriter.Close()
	select {
	case <-filterDone:
	case <-time.After(time.Second): // never hold up an exit for a stray print
	}
}

// handshakeLine is go-plugin's "core|app|network|address|protocol|cert" line.
var handshakeLine = regexp.MustCompile(`\d+\|\d+\|(unix|tcp)\|[^|\n]*\|(grpc|netrpc)\|[^\n]*\n`)

// filterStdout copies r to stderr, except the go-plugin handshake line, which goes to the real
// stdout. go-plugin prints the line through os.Stdout, so os.Stdout must stay writable; routing
// it through this filter keeps everything else off the handshake channel, even when another
// goroutine writes to os.Stdout at the same moment.
func filterStdout(r io.Reader, stdout, stderr io.Writer) {
	br := bufio.NewReader(r)
	passed := false
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if loc := handshakeLine.FindStringIndex(line); !passed && loc != nil {
				passed = true
				_, _ = io.WriteString(stderr, line[:loc[0]])
				_, _ = io.WriteString(stdout, line[loc[0]:loc[1]])
				_, _ = io.WriteString(stderr, line[loc[1]:])
			} else {
				_, _ = io.WriteString(stderr, line)
			}
		}
		if err != nil {
			return
		}
	}
}

// watchParent calls exit once the process's parent is no longer parent. It backs up the
// kernel's parent-death signal, which fires when the parent *thread* that forked us exits rather
// than the parent process, and which non-Linux systems lack.
func watchParent(log *slog.Logger, parent int, every time.Duration, exit func(code int)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != parent {
			log.Warn("parent process is gone: exiting", "parent", parent)
			exit(1)
			return
		}
	}
}

// expectedParent is the host's PID as it announced it, or our parent at start-up.
func expectedParent() int {
	var pid int
	if _, err := fmt.Sscan(os.Getenv(ParentPIDEnv), &pid); err == nil && pid > 0 {
		return pid
	}
	return os.Getppid()
}

package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// redisReadyTimeout bounds the wait for a redis-server child to answer when ctx has no deadline.
const redisReadyTimeout = 30 * time.Second

// StartRedis starts a Redis for `flowd dev` and returns its redis:// URL. With redis-server on
// PATH it runs one as a child process persisting to dataDir/redis (AOF + RDB), on a loopback
// port remembered in dataDir/redis.port; otherwise it starts an in-memory miniredis and warns
// that nothing survives the process. stop shuts it down (redis-server saves on SIGTERM); it is
// safe to call more than once.
func StartRedis(ctx context.Context, dataDir string, log *slog.Logger) (url string, stop func(), err error) {
	if log == nil {
		log = slog.Default()
	}
	dir := filepath.Join(dataDir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("devenv: redis data dir: %w", err)
	}
	portFile := filepath.Join(dataDir, "redis.port")

	bin, lookErr := exec.LookPath("redis-server")
	if lookErr != nil {
		return startMiniredis(portFile, log)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, redisReadyTimeout)
		defer cancel()
	}
	// The remembered port can be taken between our check and redis binding it: one retry on a
	// fresh port.
	for attempt := 0; ; attempt++ {
		port, err := stablePort(portFile)
		if err != nil {
			return "", nil, fmt.Errorf("devenv: redis port: %w", err)
		}
		url, stop, err := startRedisServer(ctx, bin, dir, port, log)
		if err == nil || attempt == 1 || ctx.Err() != nil || !errors.Is(err, errExited) {
			return url, stop, err
		}
		_ = os.Remove(portFile)
	}
}

var errExited = errors.New("redis-server exited")

func startRedisServer(ctx context.Context, bin, dir string, port int, log *slog.Logger) (string, func(), error) {
	logPath := filepath.Join(dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("devenv: redis log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor

	// Not exec.CommandContext: the server must outlive the start-up ctx; stop ends it.
	cmd := exec.Command(bin,
		"--dir", dir,
		"--appendonly", "yes",
		"--save", "60", "1",
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("devenv: start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second): // a large final save can take a while
			log.Warn("redis-server did not stop on SIGTERM; killing it", "pid", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitPing(ctx, addr, exited); err != nil {
		stop()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w (%v; see %s)", err, waitErr, logPath)
		}
		return "", nil, fmt.Errorf("devenv: redis-server on %s: %w", addr, err)
	}
	url := "redis://" + addr + "/0"
	log.Info("redis-server started", "url", url, "dir", dir, "pid", cmd.Process.Pid)
	return url, sync.OnceFunc(stop), nil
}

// waitPing polls PING until it answers, the process exits, or ctx ends.
func waitPing(ctx context.Context, addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("no PING answer (last error: %v): %w", err, ctx.Err())
		case <-tick.C:
		}
	}
}

func startMiniredis(portFile string, log *slog.Logger) (string, func(), error) {
	m := miniredis.NewMiniRedis()
	ln, err := listenStable(portFile)
	if err != nil {
		return "", nil, fmt.Errorf("devenv: miniredis port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close() // miniredis binds by address only
	if err := m.StartAddr(addr); err != nil {
		return "", nil, fmt.Errorf("devenv: start miniredis on %s: %w", addr, err)
	}
	url := "redis://" + addr + "/0"
	log.Warn("redis-server not found on PATH: using an embedded in-memory Redis; "+
		"flows, executions and all other Redis data are in memory only and WILL BE LOST when "+
		"flowd exits. Install redis-server (e.g. apt-get install redis-server) for persistence",
		"url", url)
	return url, sync.OnceFunc(m.Close), nil
}

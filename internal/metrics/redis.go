package metrics

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// RedisHook counts failed Redis commands (flowd_redis_errors_total); add it to every client
// with AddHook.
type RedisHook struct{}

var _ redis.Hook = RedisHook{}

// DialHook passes dials through: a failed dial fails the command that needed it, counted there.
func (RedisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

// ProcessHook counts a failed command by its name.
func (RedisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if redisFailed(err) {
			redisErrors.WithLabelValues(cmd.Name()).Inc()
		}
		return err
	}
}

// ProcessPipelineHook counts a failed pipeline or transaction once.
func (RedisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if redisFailed(err) {
			redisErrors.WithLabelValues("pipeline").Inc()
		}
		return err
	}
}

// redisFailed: a missing key (redis.Nil) and a transaction lost to a concurrent write
// (redis.TxFailedErr, retried by design) are answers, not failures.
func redisFailed(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, redis.TxFailedErr)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/store"
)

// historyResult is what Redis keeps per execution under each save policy.
type historyResult struct {
	Executions int `json:"executionsPerPolicy"`
	// BytesPerExecution: after the redelivery window, what stays for the retention.
	BytesPerExecution map[string]float64 `json:"bytesPerExecution"`
	// BytesPerExecutionInWindow: right after the executions ended, with their markers and run
	// records still there.
	BytesPerExecutionInWindow map[string]float64 `json:"bytesPerExecutionInWindow"`
	// HistoryBytesAfterE2E is the history's own account (store.History) after the end-to-end
	// runs, with the keys per execution it counts.
	HistoryBytesAfterE2E int64   `json:"historyBytesAfterEndToEnd"`
	HistoryKeptAfterE2E  int64   `json:"historyExecutionsAfterEndToEnd"`
	WindowSeconds        float64 `json:"redeliveryWindowSeconds"`
}

// benchWindow is the redelivery window of the bench's roles: short, so that the bench can
// measure what stays once it has passed.
const benchWindow = 5 * time.Second

// historyBytes runs n executions of the bench flow under each save policy, one policy after
// the other on a quiet pipeline, and measures Redis's used_memory before, right after they
// ended and once the redelivery window has passed.
func (b *bench) historyBytes(ctx context.Context, st *store.Store, ing *role, base, sinkURL string, n int) (*historyResult, error) {
	res := &historyResult{Executions: n, BytesPerExecution: map[string]float64{}, BytesPerExecutionInWindow: map[string]float64{}, WindowSeconds: benchWindow.Seconds()}
	u, err := st.History(ctx)
	if err != nil {
		return nil, err
	}
	res.HistoryBytesAfterE2E, res.HistoryKeptAfterE2E = u.Bytes, u.Kept+u.Failed
	for _, save := range []string{store.SaveAll, store.SaveSummary, store.SaveNone} {
		id, err := createActiveFlow(ctx, st, e2eFlowSaving("bench-history-"+save, sinkURL, save))
		if err != nil {
			return nil, err
		}
		url := base + "/hooks/" + id
		if err := waitHTTP(ctx, ing, http.MethodHead, url, 200, 30*time.Second); err != nil {
			return nil, err
		}
		before, err := b.usedMemory(ctx)
		if err != nil {
			return nil, err
		}
		if err := sendN(ctx, url, n, 32, b.payload); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(120 * time.Second)
		for {
			c, err := st.Counts(ctx, id)
			if err != nil {
				return nil, err
			}
			if c.Success+c.Error+c.Ignored >= int64(n) {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("history %s: %d of %d executions ended in 120 s", save, c.Success+c.Error+c.Ignored, n)
			}
			time.Sleep(50 * time.Millisecond) // polling Redis with a deadline
		}
		inWindow, err := b.usedMemory(ctx)
		if err != nil {
			return nil, err
		}
		time.Sleep(benchWindow + time.Second) // the window is a duration: wait it out
		after, err := b.usedMemory(ctx)
		if err != nil {
			return nil, err
		}
		res.BytesPerExecutionInWindow[save] = round1(float64(inWindow-before) / float64(n))
		res.BytesPerExecution[save] = round1(float64(after-before) / float64(n))
		logf("history %s: %.0f bytes per execution (%.0f within the redelivery window)", save, res.BytesPerExecution[save], res.BytesPerExecutionInWindow[save])
	}
	return res, nil
}

// usedMemory is Redis's used_memory once expired keys are gone: a SCAN over every key
// expires those whose time has passed, which Redis otherwise does only gradually.
func (b *bench) usedMemory(ctx context.Context) (int64, error) {
	var cursor uint64
	for {
		keys, next, err := b.rdb.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			return 0, err
		}
		if len(keys) > 0 {
			// EXISTS expires what is due, like any access.
			if err := b.rdb.Exists(ctx, keys...).Err(); err != nil && !errors.Is(err, redis.Nil) {
				return 0, err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	info, err := b.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO memory has no used_memory")
}

// sendN posts n webhooks from clients concurrent senders; any answer but 202 is an error.
func sendN(ctx context.Context, url string, n, clients int, payload []byte) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	c := &http.Client{Timeout: 30 * time.Second}
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
				if err != nil {
					errc <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					errc <- err
					return
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errc <- fmt.Errorf("webhook answered %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

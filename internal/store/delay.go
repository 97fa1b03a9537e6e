package store

// The delay queue holds records back until they are due: the work item of a step's next
// attempt waits here, not in a runner, so a retry's backoff holds no partition and a crash
// loses nothing (the record is in Redis from the transition that decided the retry on).
//
// A record's id is chosen by the scheduler and deterministic (the execution, the consumed
// message and the record's place), so scheduling it again after a redelivery changes nothing.
// Taking due records pushes their due time a lease ahead instead of removing them: a
// producer that dies before producing them leaves them to be taken again when the lease runs
// out. A record may therefore be produced twice; the work items' run records make that
// harmless.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delayed is a record held back, with the id it is scheduled under.
type Delayed struct {
	ID     string
	Record Record
}

func (s *Store) delayKeys() (due, recs string) {
	return s.p + "{delay}:due", s.p + "{delay}:recs"
}

// Schedule holds each record back until its Due time.
func (s *Store) Schedule(ctx context.Context, recs ...Delayed) error {
	if len(recs) == 0 {
		return nil
	}
	due, vals := s.delayKeys()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range recs {
			raw, err := json.Marshal(d.Record)
			if err != nil {
				return fmt.Errorf("encode delayed record %s: %w", d.ID, err)
			}
			p.HSet(ctx, vals, d.ID, raw)
			p.ZAdd(ctx, due, redis.Z{Score: float64(d.Record.Due.UnixMilli()), Member: d.ID})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("schedule %d delayed record(s): %w", len(recs), err)
	}
	return nil
}

// TakeDue leases up to n records due at now for lease and returns them, with when the
// earliest record still waiting is due (zero when none is). Done removes what was produced;
// what is not done is due again when the lease runs out.
func (s *Store) TakeDue(ctx context.Context, now time.Time, lease time.Duration, n int) ([]Delayed, time.Time, error) {
	due, vals := s.delayKeys()
	rows, next, err := s.takeLeased(ctx, []string{due, vals}, now, lease, n)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]Delayed, 0, len(rows))
	for _, row := range rows {
		var rec Record
		if err := json.Unmarshal([]byte(row[1]), &rec); err != nil {
			return nil, time.Time{}, fmt.Errorf("decode delayed record %s: %w", row[0], err)
		}
		out = append(out, Delayed{ID: row[0], Record: rec})
	}
	return out, next, nil
}

// Done removes records that were produced.
func (s *Store) Done(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	due, vals := s.delayKeys()
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, due, members...)
		p.HDel(ctx, vals, ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop %d produced delayed record(s): %w", len(ids), err)
	}
	return nil
}

// DelayedCount is how many records wait in the delay queue.
func (s *Store) DelayedCount(ctx context.Context) (int64, error) {
	due, _ := s.delayKeys()
	n, err := s.rdb.ZCard(ctx, due).Result()
	if err != nil {
		return 0, fmt.Errorf("count delayed records: %w", err)
	}
	return n, nil
}

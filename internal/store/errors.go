package store

// Open errors: a flow's failed executions that no operator has resolved yet, grouped by error
// code, the way an error dashboard shows them. A failed execution stays in the flow's failed
// index until its age runs out; resolving it only notes its id in the flow's resolved set,
// so the flow's counters and statistics, which count what happened, do not change.

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// MaxErrorScan bounds how many of a flow's newest failed executions ErrorGroups reads.
const MaxErrorScan = 10000

// ErrorGroup is the open errors of one code.
type ErrorGroup struct {
	Code          string    `json:"code"`
	Count         int       `json:"count"`
	LastMessage   string    `json:"lastMessage"`
	LastExecution string    `json:"lastExecutionId"`
	LastAt        time.Time `json:"lastAt"`
	FirstAt       time.Time `json:"firstAt"`
}

// ErrorSummary is a flow's open errors; Truncated says more failures exist than were read.
type ErrorSummary struct {
	Groups    []ErrorGroup `json:"groups"`
	Open      int          `json:"open"`
	Resolved  int          `json:"resolved"`
	Truncated bool         `json:"truncated,omitempty"`
}

func (s *Store) flowResolvedKey(flowID string) string {
	return s.tagged("flow", keyID(flowID), "resolved")
}

// ErrorGroups reads the flow's failed executions, newest first (at most MaxErrorScan), and
// groups the unresolved ones by error code, largest group first.
func (s *Store) ErrorGroups(ctx context.Context, flowID string) (ErrorSummary, error) {
	open, resolved, truncated, err := s.failedRecords(ctx, flowID)
	if err != nil {
		return ErrorSummary{}, err
	}
	sum := ErrorSummary{Groups: []ErrorGroup{}, Resolved: resolved, Truncated: truncated}
	by := map[string]*ErrorGroup{}
	for _, e := range open {
		code, msg := "unknown", ""
		if e.Error != nil {
			code, msg = e.Error.Code, e.Error.Message
		}
		at := e.ReceivedAt
		if e.FinishedAt != nil {
			at = *e.FinishedAt
		}
		g := by[code]
		if g == nil {
			g = &ErrorGroup{Code: code, FirstAt: at}
			by[code] = g
		}
		g.Count++
		sum.Open++
		if at.After(g.LastAt) {
			g.LastAt, g.LastMessage, g.LastExecution = at, msg, e.ID
		}
		if at.Before(g.FirstAt) {
			g.FirstAt = at
		}
	}
	for _, g := range by {
		sum.Groups = append(sum.Groups, *g)
	}
	sort.Slice(sum.Groups, func(i, j int) bool {
		a, b := sum.Groups[i], sum.Groups[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Code < b.Code
	})
	return sum, nil
}

// ResolveErrors marks failed executions of the flow resolved (ids that are not failed
// executions of the flow are ignored) and reports how many were newly resolved. The resolved
// set lives as long as the flow's failures do (the retention).
func (s *Store) ResolveErrors(ctx context.Context, flowID string, ids []string, retention time.Duration) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if retention <= 0 {
		retention = DefaultExecutionRetention
	}
	key := s.flowExecsKey(flowID, envelope.StatusFailed)
	scores := make([]*redis.FloatCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			scores[i] = p.ZScore(ctx, key, id)
		}
		return nil
	}); err != nil && err != redis.Nil {
		return 0, fmt.Errorf("check failures of %s: %w", flowID, err)
	}
	var members []any
	for i, id := range ids {
		if scores[i].Err() == nil {
			members = append(members, id)
		}
	}
	if len(members) == 0 {
		return 0, nil
	}
	rk := s.flowResolvedKey(flowID)
	var added *redis.IntCmd
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		added = p.SAdd(ctx, rk, members...)
		p.PExpire(ctx, rk, retention)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("resolve failures of %s: %w", flowID, err)
	}
	return int(added.Val()), nil
}

// OpenFailures lists the flow's failed executions not resolved, newest first, optionally of
// one error code, at most limit (and at most MaxErrorScan read).
func (s *Store) OpenFailures(ctx context.Context, flowID, code string, limit int) ([]string, error) {
	open, _, _, err := s.failedRecords(ctx, flowID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range open {
		if code != "" && (e.Error == nil || e.Error.Code != code) {
			continue
		}
		out = append(out, e.ID)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// failedRecords reads the flow's newest failed executions (at most MaxErrorScan): the
// unresolved ones' records, how many of those read are resolved, and whether there are more.
func (s *Store) failedRecords(ctx context.Context, flowID string) (open []envelope.Execution, resolvedN int, truncated bool, err error) {
	var ids, resolved *redis.StringSliceCmd
	var card *redis.IntCmd
	key := s.flowExecsKey(flowID, envelope.StatusFailed)
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		ids = p.ZRevRange(ctx, key, 0, MaxErrorScan-1)
		card = p.ZCard(ctx, key)
		resolved = p.SMembers(ctx, s.flowResolvedKey(flowID))
		return nil
	}); err != nil {
		return nil, 0, false, fmt.Errorf("read failures of %s: %w", flowID, err)
	}
	done := map[string]bool{}
	for _, id := range resolved.Val() {
		done[id] = true
	}
	var openIDs []string
	for _, id := range ids.Val() {
		if done[id] {
			resolvedN++
		} else {
			openIDs = append(openIDs, id)
		}
	}
	recs, err := mgetJSON[execRecord](ctx, s, openIDs, s.execKey)
	if err != nil {
		return nil, 0, false, err
	}
	open = make([]envelope.Execution, len(recs))
	for i, r := range recs {
		open[i] = r.Execution
	}
	return open, resolvedN, card.Val() > MaxErrorScan, nil
}

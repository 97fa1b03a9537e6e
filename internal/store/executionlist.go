package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// MaxMergedDepth bounds how deep ExecutionsOfFlows pages: offset+limit is at most this.
const MaxMergedDepth = 1000

// ExecutionsOfFlows is FlowExecutions over several flows together: their executions newest
// first (by receivedAt, then id), optionally of one status, and the total of them all for
// paging. It merges the flows' own indexes, reading each only as deep as the page needs, so it
// is bounded by the page's depth, offset+limit, at most MaxMergedDepth, and by the number of
// flows:
//
//   - one round trip counts every flow's index of each status and reads the newest entries
//     of each, depth/(flows·statuses) of them (at least one);
//   - every further round trip reads, from only the indexes that may still hold entries of the
//     page, twice as many as that index's last read (so at most about log2(depth) of them), and
//     what these reads return stays within twice the depth;
//   - then one read loads the page's records.
//
// Index entries whose record has expired are removed as they are found, as FlowExecutions does.
func (s *Store) ExecutionsOfFlows(ctx context.Context, flowIDs []string, status string, offset, limit int) ([]envelope.Execution, int, error) {
	if offset < 0 || limit <= 0 || offset+limit > MaxMergedDepth {
		return nil, 0, fmt.Errorf("list executions: offset %d and limit %d reach beyond the newest %d", offset, limit, MaxMergedDepth)
	}
	return s.mergeExecutions(ctx, flowIDs, status, offset, limit)
}

// FlowExecutions lists one flow's executions, newest first, optionally of one status, with
// the total for paging; index entries whose record expired are dropped as they are found. A
// page is as cheap as its depth: it reads the flow's indexes only as deep as the page needs.
func (s *Store) FlowExecutions(ctx context.Context, flowID, status string, offset, limit int) ([]envelope.Execution, int, error) {
	return s.mergeExecutions(ctx, []string{flowID}, status, max(offset, 0), limit)
}

// mergeExecutions is the merge both lists run (see ExecutionsOfFlows).
func (s *Store) mergeExecutions(ctx context.Context, flowIDs []string, status string, offset, limit int) ([]envelope.Execution, int, error) {
	if limit <= 0 {
		return []envelope.Execution{}, 0, nil
	}
	depth := offset + limit
	statuses := indexStatuses
	if status != "" {
		statuses = []string{status}
	}
	lists := make([]*mergedIndex, 0, len(flowIDs)*len(statuses))
	for _, f := range flowIDs {
		for _, st := range statuses {
			lists = append(lists, &mergedIndex{flow: f, key: s.flowExecsKey(f, st), live: true})
		}
	}
	if len(lists) == 0 {
		return []envelope.Execution{}, 0, nil
	}
	first := max(1, (depth+len(lists)-1)/len(lists))
	for _, l := range lists {
		l.batch = first
	}

	var total int64
	var top []mergedEntry // the newest entries read so far, at most depth of them
	for round := 0; ; round++ {
		live := make([]*mergedIndex, 0, len(lists))
		for _, l := range lists {
			if l.live {
				live = append(live, l)
			}
		}
		if len(live) == 0 {
			break
		}
		var cards []*redis.IntCmd
		reads := make([]*redis.ZSliceCmd, len(live))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range live {
				if round == 0 {
					cards = append(cards, p.ZCard(ctx, l.key))
				}
				reads[i] = p.ZRevRangeWithScores(ctx, l.key, int64(l.fetched), int64(l.fetched+l.batch-1))
			}
			return nil
		}); err != nil {
			return nil, 0, fmt.Errorf("list executions of %d flows: %w", len(flowIDs), err)
		}
		for _, c := range cards {
			total += c.Val()
		}
		for i, l := range live {
			got := reads[i].Val()
			for _, z := range got {
				top = append(top, mergedEntry{id: fmt.Sprint(z.Member), score: z.Score, index: l})
			}
			if len(got) > 0 {
				l.last = top[len(top)-1]
			}
			l.fetched += len(got)
			// Read out, or read as deep as any entry of the page can be.
			l.live = len(got) == l.batch && l.fetched < depth
			l.batch = min(2*l.batch, depth-l.fetched)
		}
		slices.SortFunc(top, func(a, b mergedEntry) int {
			switch {
			case a.newer(b):
				return -1
			case b.newer(a):
				return 1
			}
			return 0
		})
		// An execution read twice (its status changed between two reads) counts once.
		top = slices.CompactFunc(top, func(a, b mergedEntry) bool { return a.id == b.id })
		if len(top) >= depth {
			top = top[:depth]
			// An index whose last entry read is not newer than the page's oldest holds nothing
			// newer unread: its unread entries are all older than its last one.
			cut := top[depth-1]
			for _, l := range lists {
				if l.live && !l.last.newer(cut) {
					l.live = false
				}
			}
		}
	}
	if int64(offset) >= total || offset >= len(top) {
		return []envelope.Execution{}, int(total), nil
	}
	page := top[offset:min(len(top), depth)]
	ids := make([]string, len(page))
	for i, e := range page {
		ids[i] = e.id
	}
	stored, err := mgetJSON[execRecord](ctx, s, ids, s.execKey)
	if err != nil {
		return nil, 0, err
	}
	recs := make([]envelope.Execution, len(stored))
	found := make(map[string]bool, len(stored))
	for i, r := range stored {
		recs[i] = r.Execution
		found[r.ID] = true
	}
	if len(recs) < len(ids) {
		gone := map[string][]any{} // by flow
		for _, e := range page {
			if !found[e.id] {
				gone[e.index.flow] = append(gone[e.index.flow], e.id)
			}
		}
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for flow, ids := range gone {
				for _, st := range indexStatuses {
					p.ZRem(ctx, s.flowExecsKey(flow, st), ids...)
				}
			}
			return nil
		}); err != nil {
			return nil, 0, fmt.Errorf("drop expired executions: %w", err)
		}
		total -= int64(len(ids) - len(recs))
	}
	return recs, int(total), nil
}

// mergedIndex is one flow's index of one status, as ExecutionsOfFlows reads it.
type mergedIndex struct {
	flow, key string
	fetched   int         // entries read so far: the next read starts there
	batch     int         // how many the next read asks for
	last      mergedEntry // the oldest entry read so far
	live      bool        // may still hold unread entries of the page
}

type mergedEntry struct {
	id    string
	score float64 // receivedAt, in Unix milliseconds
	index *mergedIndex
}

// newer orders the merged list: by receivedAt, then by id, descending, as each index's
// ZREVRANGE orders its own entries.
func (e mergedEntry) newer(o mergedEntry) bool {
	if e.score != o.score {
		return e.score > o.score
	}
	return e.id > o.id
}

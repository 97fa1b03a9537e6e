package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/audit"
)

// The audit log: one Redis stream per tenant (the entries of its users), one for users of no
// tenant, and an index of the tenants with a stream. An entry's stream id is its time in ms
// (later when the stream already holds a later one, so that a clock going back never reorders
// or refuses an entry): the retention trims by id (MINID) and a time range reads by id. Each
// append trims its stream to the retention and keeps the stream a retention longer; a stream
// nobody appends to for a whole retention expires with its last entry. Entries are only ever
// appended and trimmed: nothing edits or deletes one.

// auditTag is the hash tag of the audit log's keys: a stream and the index change together.
const auditTag = "{audit}"

func (s *Store) auditKey(parts ...string) string {
	out := s.p + auditTag
	for _, p := range parts {
		out += ":" + p
	}
	return out
}

// auditStream is the stream of tenant's entries.
func (s *Store) auditStream(tenant string) string {
	if tenant == "" {
		return s.auditKey("none")
	}
	return s.auditKey("tenant", keyID(tenant))
}

// appendAuditScript appends entries to a stream after its newest one and trims the stream and
// the index to the retention.
// KEYS: stream, index. ARGV: the entries' time (ms), the oldest time kept (ms), the stream's
// TTL (ms), the tenant, then each entry (JSON).
var appendAuditScript = redis.NewScript(`
local ms, seq = tonumber(ARGV[1]), 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= ms then
    ms, seq = lms, lseq + 1
  end
end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], string.format('%.0f-%.0f', ms, seq), 'e', ARGV[i])
  seq = seq + 1
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ms, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
return ms`)

// AppendAudit appends entries to their tenants' audit streams and drops the entries older than
// retention before the newest one's time.
func (s *Store) AppendAudit(ctx context.Context, retention time.Duration, entries ...audit.Entry) error {
	if retention <= 0 {
		return fmt.Errorf("audit retention %s: must be positive", retention)
	}
	// One script call per tenant: a request's entries share its actor, so usually one.
	byTenant := map[string][]audit.Entry{}
	var tenants []string
	for _, e := range entries {
		if _, ok := byTenant[e.Tenant]; !ok {
			tenants = append(tenants, e.Tenant)
		}
		byTenant[e.Tenant] = append(byTenant[e.Tenant], e)
	}
	for _, tenant := range tenants {
		es := byTenant[tenant]
		var at time.Time
		args := []any{0, 0, retention.Milliseconds(), tenant}
		for _, e := range es {
			if e.Time.After(at) {
				at = e.Time
			}
			args = append(args, mustJSON(e))
		}
		args[0], args[1] = at.UnixMilli(), at.Add(-retention).UnixMilli()
		keys := []string{s.auditStream(tenant), s.auditKey("tenants")}
		if err := appendAuditScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
			return fmt.Errorf("append audit entries: %w", err)
		}
	}
	return nil
}

// AuditQuery selects a page of audit entries, newest first.
type AuditQuery struct {
	// Tenants are the tenants whose entries are read ("" for users of no tenant); nil reads
	// every tenant's.
	Tenants []string
	Filter  audit.Filter
	// Since is the retention's bound: older entries are not returned, trimmed or not yet.
	Since         time.Time
	Offset, Limit int
}

// auditChunk is how many entries one read of a stream takes.
const auditChunk = 500

// AuditLog returns the entries q selects (at most q.Limit from q.Offset, newest first) and how
// many it selects in all.
func (s *Store) AuditLog(ctx context.Context, q AuditQuery) ([]audit.Entry, int, error) {
	tenants := q.Tenants
	if tenants == nil {
		var err error
		if tenants, err = s.rdb.ZRange(ctx, s.auditKey("tenants"), 0, -1).Result(); err != nil {
			return nil, 0, fmt.Errorf("list audit streams: %w", err)
		}
	}
	start, end := "-", "+"
	from := q.Filter.From
	if q.Since.After(from) {
		from = q.Since
	}
	if !from.IsZero() {
		start = strconv.FormatInt(max(from.UnixMilli(), 0), 10)
	}
	if !q.Filter.To.IsZero() {
		end = strconv.FormatInt(q.Filter.To.UnixMilli(), 10)
	}
	f := q.Filter
	f.From = from
	// Only the first Offset+Limit matches of each stream can be on the page.
	keep := q.Offset + q.Limit
	var hits []auditHit
	total := 0
	for _, tenant := range tenants {
		hs, n, err := s.readAudit(ctx, s.auditStream(tenant), start, end, f, keep)
		if err != nil {
			return nil, 0, err
		}
		hits = append(hits, hs...)
		total += n
	}
	// Newest first by stream id, as each stream is read: the order entries were appended in.
	slices.SortStableFunc(hits, func(a, b auditHit) int { return cmp.Compare(b.ms, a.ms) })
	out := []audit.Entry{}
	for i := q.Offset; i < min(keep, len(hits)); i++ {
		out = append(out, hits[i].e)
	}
	return out, total, nil
}

// auditHit is an entry read, with its stream id's time (ms).
type auditHit struct {
	ms int64
	e  audit.Entry
}

// readAudit reads stream from end back to start, newest first, returning the first keep
// entries f matches and how many it matches in all.
func (s *Store) readAudit(ctx context.Context, stream, start, end string, f audit.Filter, keep int) ([]auditHit, int, error) {
	var out []auditHit
	total := 0
	for {
		msgs, err := s.rdb.XRevRangeN(ctx, stream, end, start, auditChunk).Result()
		if err != nil {
			return nil, 0, fmt.Errorf("read audit stream %s: %w", stream, err)
		}
		for _, m := range msgs {
			raw, _ := m.Values["e"].(string)
			var e audit.Entry
			if err := json.Unmarshal([]byte(raw), &e); err != nil {
				return nil, 0, fmt.Errorf("decode audit entry %s of %s: %w", m.ID, stream, err)
			}
			if !f.Match(&e) {
				continue
			}
			total++
			if len(out) < keep {
				ms, _, _ := strings.Cut(m.ID, "-")
				n, _ := strconv.ParseInt(ms, 10, 64)
				out = append(out, auditHit{ms: n, e: e})
			}
		}
		if len(msgs) < auditChunk {
			return out, total, nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
}

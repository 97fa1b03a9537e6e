package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Layout versions. Version 1 had no hash tags (P flow:<id>, P exec:<id>, ...); version 2 is
// the layout in store.go, which a Redis Cluster can hold.
const (
	layoutKey     = "layout"
	layoutVersion = "2"
)

// UpgradeLayout renames the keys an earlier flowd wrote in layout 1 to layout 2, once per
// Redis; every role calls it at start-up, and it returns at once after the first. It renames
// with RENAMENX, so a key the new layout already holds is never overwritten, and it tolerates
// other processes upgrading at the same time. It reports how many keys it renamed. A cluster
// never held layout 1 (its transactions spanned hash slots), so there it only records the
// version.
func (s *Store) UpgradeLayout(ctx context.Context) (int, error) {
	v, err := s.rdb.Get(ctx, s.k(layoutKey)).Result()
	if err == nil && v == layoutVersion {
		return 0, nil
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read the key layout version: %w", err)
	}
	renamed := 0
	if c, ok := s.rdb.(*redis.Client); ok {
		if renamed, err = s.upgradeKeys(ctx, c); err != nil {
			return renamed, err
		}
	}
	if err := s.rdb.Set(ctx, s.k(layoutKey), layoutVersion, 0).Err(); err != nil {
		return renamed, fmt.Errorf("record the key layout version: %w", err)
	}
	return renamed, nil
}

func (s *Store) upgradeKeys(ctx context.Context, c *redis.Client) (int, error) {
	renamed := 0
	iter := c.Scan(ctx, 0, globEscape.Replace(s.p)+"*", 1000).Iterator()
	for iter.Next(ctx) {
		old := iter.Val()
		to, ok := upgradedKey(s.p, old)
		if !ok {
			continue
		}
		ok, err := c.RenameNX(ctx, old, to).Result()
		switch {
		case err != nil && strings.Contains(err.Error(), "no such key"):
			continue // another process renamed it first
		case err != nil:
			return renamed, fmt.Errorf("rename %s: %w", old, err)
		case ok:
			renamed++
		}
	}
	if err := iter.Err(); err != nil {
		return renamed, fmt.Errorf("scan keys: %w", err)
	}
	return renamed, nil
}

var braceEscape = strings.NewReplacer("{", "%7B", "}", "%7D")

var globEscape = strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`)

// upgradedKey maps a layout-1 key to its layout-2 name; ok is false for a key already in
// layout 2. Ids in layout 1 had ':' and '%' escaped, not braces, so each part is escaped again.
func upgradedKey(prefix, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || rest == "" || strings.HasPrefix(rest, metaTag) {
		return "", false
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 1 && strings.HasPrefix(parts[1], "{") {
		return "", false // kind:{id}: already tagged
	}
	for i, p := range parts {
		parts[i] = braceEscape.Replace(p)
	}
	tagged := len(parts) >= 2 && (parts[0] == "exec" || parts[0] == "run" || parts[0] == "idem") ||
		len(parts) >= 3 && parts[0] == "flow" && (parts[2] == "execs" || parts[2] == "stats" || parts[2] == "ignored")
	if !tagged {
		return prefix + metaTag + ":" + strings.Join(parts, ":"), true
	}
	out := prefix + parts[0] + ":{" + parts[1] + "}"
	if len(parts) > 2 {
		out += ":" + strings.Join(parts[2:], ":")
	}
	return out, true
}

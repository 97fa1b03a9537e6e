package controlplane

import (
	"cmp"
	"slices"
	"time"
)

// sortBy orders items by the list's sort key: "name"/"username" use name, "createdAt" and
// "updatedAt" the given clocks; ties keep a stable order.
func sortBy[T any](items []T, lp listParams, name func(T) string, created func(T) time.Time, updated func(T) time.Time) {
	slices.SortStableFunc(items, func(a, b T) int {
		var r int
		switch {
		case (lp.sortKey == "name" || lp.sortKey == "username") && name != nil:
			r = cmp.Compare(name(a), name(b))
		case lp.sortKey == "updatedAt" && updated != nil:
			r = updated(a).Compare(updated(b))
		case created != nil:
			r = created(a).Compare(created(b))
		}
		if lp.desc {
			r = -r
		}
		return r
	})
}

package flowdoc

import (
	"sort"
	"strconv"
	"strings"

	"github.com/flowd/flowd/internal/problem"
)

// dropAt removes the value at loc: object members are deleted, array elements become null so
// later indices (and the paths that name them) stay put.
func dropAt(doc any, loc []string) any {
	if len(loc) == 0 {
		return nil
	}
	switch x := doc.(type) {
	case map[string]any:
		if len(loc) == 1 {
			delete(x, loc[0])
		} else if c, ok := x[loc[0]]; ok {
			x[loc[0]] = dropAt(c, loc[1:])
		}
	case []any:
		i, err := strconv.Atoi(loc[0])
		if err != nil || i < 0 || i >= len(x) {
			return doc
		}
		if len(loc) == 1 {
			x[i] = nil
		} else {
			x[i] = dropAt(x[i], loc[1:])
		}
	}
	return doc
}

// valueAt returns the value at loc, if present.
func valueAt(doc any, loc []string) (any, bool) {
	for _, t := range loc {
		switch x := doc.(type) {
		case map[string]any:
			v, ok := x[t]
			if !ok {
				return nil, false
			}
			doc = v
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			doc = x[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// finish removes repeats (the schema and the semantic checks may both notice the same thing)
// and sorts by path, numeric segments numerically, then by code.
func finish(l problem.List) problem.List {
	if len(l) == 0 {
		return nil
	}
	sort.SliceStable(l, func(i, j int) bool {
		if c := comparePaths(l[i].Path, l[j].Path); c != 0 {
			return c < 0
		}
		if l[i].Code != l[j].Code {
			return l[i].Code < l[j].Code
		}
		return l[i].Message < l[j].Message
	})
	out := l[:0]
	for i, p := range l {
		if i > 0 && p.Path == out[len(out)-1].Path && p.Code == out[len(out)-1].Code {
			continue
		}
		out = append(out, p)
	}
	return out
}

func comparePaths(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			if ai < bi {
				return -1
			}
			return 1
		}
		if as[i] < bs[i] {
			return -1
		}
		return 1
	}
	return len(as) - len(bs)
}

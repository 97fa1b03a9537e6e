package transform

import (
	"container/list"
	"sync"

	"github.com/flowd/flowd/internal/expression"
)

// programCache keeps compiled expressions by source. The same node config runs for every item
// of every execution, and compiling costs far more than evaluating; the bound keeps a stream of
// distinct sources (one per flow revision) from growing the process without limit.
type programCache struct {
	mu    sync.Mutex
	cap   int
	order *list.List // front = most recently used; values are *entry
	items map[string]*list.Element
}

type entry struct {
	src  string
	prog *expression.Program
}

func newProgramCache(capacity int) *programCache {
	return &programCache{cap: capacity, order: list.New(), items: make(map[string]*list.Element, capacity)}
}

// get returns the compiled program for src, compiling it on a miss. Compile errors are not
// cached: a bad source costs a compile per call, which is cheap next to failing the step.
func (c *programCache) get(src string) (*expression.Program, error) {
	c.mu.Lock()
	if el, ok := c.items[src]; ok {
		c.order.MoveToFront(el)
		p := el.Value.(*entry).prog
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()

	// Compile outside the lock so one slow compile does not stall every call; two callers may
	// compile the same source at once, and the second simply finds it cached.
	p, err := expression.Compile(src)
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[src]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*entry).prog, nil
	}
	c.items[src] = c.order.PushFront(&entry{src: src, prog: p})
	for c.order.Len() > c.cap {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*entry).src)
	}
	return p, nil
}

func (c *programCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

package router

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/router/graph"
)

// errGone means a record refers to a flow revision that does not exist (or cannot run):
// retrying cannot help, so the record goes to the DLQ. A deleted flow's revisions stay stored
// for store.RevisionGrace, so records acknowledged before the delete still run; partner
// records (revision 0, the current one) of a deleted flow have nothing to run.
var errGone = errors.New("flow revision not available")

// graphs keeps compiled revisions, least recently used first out. Revisions never change once
// written, so an entry is only ever dropped for space or because its flow was deleted.
type graphs struct {
	st  Flows
	max int

	mu    sync.Mutex
	ll    *list.List // of *cached, most recent at the front
	byKey map[string]*list.Element
}

type cached struct {
	flowID string
	key    string
	g      *graph.Graph
}

func newGraphs(st Flows, maxEntries int) *graphs {
	return &graphs{st: st, max: maxEntries, ll: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the compiled revision, loading and compiling it on a miss. Revision 0 means the
// flow's current revision.
func (c *graphs) get(ctx context.Context, flowID string, rev int) (*graph.Graph, error) {
	if rev <= 0 {
		f, err := c.st.Flow(ctx, flowID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("flow %s: %w", flowID, errGone)
		}
		if err != nil {
			return nil, err
		}
		rev = f.Revision
	}
	key := flowID + "@" + strconv.Itoa(rev)
	c.mu.Lock()
	if el, ok := c.byKey[key]; ok {
		c.ll.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*cached).g, nil
	}
	c.mu.Unlock()

	f, err := c.st.Revision(ctx, flowID, rev)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("flow %s revision %d: %w", flowID, rev, errGone)
	}
	if err != nil {
		return nil, err
	}
	f.ID = flowID // revision documents carry it, but the key is what counts
	g, err := graph.Compile(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errGone, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok { // compiled concurrently: keep the first
		return el.Value.(*cached).g, nil
	}
	c.byKey[key] = c.ll.PushFront(&cached{flowID: flowID, key: key, g: g})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.byKey, old.Value.(*cached).key)
	}
	return g, nil
}

// dropFlow forgets every revision of a flow (it was deleted).
func (c *graphs) dropFlow(flowID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*cached); e.flowID == flowID {
			c.ll.Remove(el)
			delete(c.byKey, e.key)
		}
		el = next
	}
}

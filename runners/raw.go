package runners

import (
	"context"
	"errors"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/envelope"
)

// RawFieldSource says which config fields of a connector's action must reach it unrendered
// (sdk.RawKeyword in its config schema), as JSON pointers into the config. The plugin host is
// one; with an Executor that is not, every field of a node's config is rendered.
type RawFieldSource interface {
	RawFields(ctx context.Context, connector, action string) ([]string, error)
}

// rawFields asks the host for the fields the node's action marks raw. The host reads them from
// the running connector's manifest, starting it if needed (the call would start it anyway).
// The error return means the runner is shutting down.
func (r *Runner) rawFields(ctx context.Context, w *envelope.Work) ([]string, *sdk.Error, error) {
	src, ok := r.exec.(RawFieldSource)
	if !ok {
		return nil, nil, nil
	}
	raw, err := src.RawFields(ctx, w.Node.Connector, w.Node.Action)
	if ctx.Err() != nil || errors.Is(err, host.ErrClosed) {
		return nil, nil, errAbandoned
	}
	if err != nil {
		return nil, hostError(err), nil
	}
	return raw, nil, nil
}

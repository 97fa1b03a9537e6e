package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
	"github.com/flowd/flowd/connectors/sdk/telemetry"
)

// Handshake is shared by the host and every connector. The cookie only tells a person who runs
// a connector binary by hand that it is a plugin; it is not a security measure (AutoMTLS and
// sha256 pinning are).
var Handshake = plugin.HandshakeConfig{
	MagicCookieKey:   "FLOWD_CONNECTOR_PLUGIN",
	MagicCookieValue: "7c1e5f0a9b3d4e62a8f1c0d9e7b6a534",
}

// PluginName is the name the connector service is dispensed under (go-plugin PluginSet key).
const PluginName = "connector"

// MaxMessageSize bounds every gRPC message between host and connector, both ways. gRPC's 4 MiB
// default is too small for batches of real payloads; an explicit bound keeps one bad item from
// exhausting memory. Larger data should travel by reference.
const MaxMessageSize = 32 << 20

// ParentPIDEnv is set by the host to its PID, so a connector started after its host already
// died notices at once instead of serving nobody.
const ParentPIDEnv = "FLOWD_CONNECTOR_PARENT_PID"

// grpcPlugin is the plugin side of the go-plugin wiring; the host has its own client side.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	engine *engine
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	connectorv1.RegisterConnectorServer(s, &grpcServer{e: p.engine})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the client side of the connector plugin lives in connectors/host")
}

type grpcServer struct {
	connectorv1.UnimplementedConnectorServer
	e *engine
}

func (s *grpcServer) Describe(context.Context, *connectorv1.DescribeRequest) (*connectorv1.DescribeResponse, error) {
	return &connectorv1.DescribeResponse{ManifestJson: s.e.manifestJSON}, nil
}

func (s *grpcServer) Execute(ctx context.Context, req *connectorv1.ExecuteRequest) (*connectorv1.ExecuteResponse, error) {
	items := make([]wireInvocation, len(req.GetInvocations()))
	parents := telemetry.IncomingItems(ctx, len(items))
	for i, in := range req.GetInvocations() {
		items[i] = wireInvocation{
			ID:             in.GetId(),
			Action:         in.GetAction(),
			Config:         in.GetConfigJson(),
			Input:          in.GetInputJson(),
			Context:        in.GetContextJson(),
			conn:           wireConn(in.GetConnection()),
			ExecutionID:    in.GetExecutionId(),
			NodeID:         in.GetNodeId(),
			Attempt:        int(in.GetAttempt()),
			IdempotencyKey: in.GetIdempotencyKey(),
			Deadline:       fromUnixMs(in.GetDeadlineUnixMs()),
		}
		if parents != nil {
			items[i].parent = parents[i]
		}
	}
	results := s.e.executeBatch(ctx, items)
	resp := &connectorv1.ExecuteResponse{Results: make([]*connectorv1.Result, len(results))}
	for i, r := range results {
		pr := &connectorv1.Result{Id: r.ID, Error: protoError(r.Error)}
		for _, o := range r.Outputs {
			pr.Outputs = append(pr.Outputs, &connectorv1.Output{Port: o.Port, DataJson: o.Data.(json.RawMessage)})
		}
		resp.Results[i] = pr
	}
	return resp, nil
}

func (s *grpcServer) Poll(ctx context.Context, req *connectorv1.PollRequest) (*connectorv1.PollResponse, error) {
	out, perr := s.e.poll(ctx, &wirePoll{
		Trigger:  req.GetTrigger(),
		Config:   req.GetConfigJson(),
		Cursor:   req.GetCursor(),
		conn:     wireConn(req.GetConnection()),
		Deadline: fromUnixMs(req.GetDeadlineUnixMs()),
	})
	if perr != nil {
		return &connectorv1.PollResponse{Error: protoError(perr)}, nil
	}
	resp := &connectorv1.PollResponse{Cursor: out.Cursor, ItemsJson: make([][]byte, len(out.Items))}
	for i, it := range out.Items {
		resp.ItemsJson[i] = it.(json.RawMessage)
	}
	return resp, nil
}

func wireConn(c *connectorv1.Connection) wireConnection {
	if c == nil {
		return wireConnection{}
	}
	return wireConnection{present: true, typ: c.GetType(), data: c.GetDataJson()}
}

func protoError(e *Error) *connectorv1.Error {
	if e == nil {
		return nil
	}
	return &connectorv1.Error{Code: e.Code, Message: e.Message, Retryable: e.Retryable, RetryAfterMs: RetryAfterMs(e.RetryAfter)}
}

func fromUnixMs(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

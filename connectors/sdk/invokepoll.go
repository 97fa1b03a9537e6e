package sdk

import (
	"context"
	"encoding/json"
	"log/slog"
)

// InvokePoll runs one poll of c's trigger in process, through the same decoding, deadline,
// panic and item checks as a served connector: for unit tests of triggers, as Invoke is for
// actions. Items come back decoded from JSON, as the host returns them.
func InvokePoll(ctx context.Context, c Connector, req PollRequest) (PollResult, *Error) {
	r, err := newEngine(c, slog.Default())
	if err != nil {
		return PollResult{}, &Error{Code: "invalid_connector", Message: err.Error()}
	}
	w := wirePoll{Trigger: req.Trigger, Cursor: req.Cursor}
	if w.Config, err = json.Marshal(req.Config); err != nil {
		return PollResult{}, AsError(Permanent("invalid_config", err))
	}
	if req.Connection != nil {
		data, err := json.Marshal(req.Connection.Data)
		if err != nil {
			return PollResult{}, AsError(Permanent("invalid_connection", err))
		}
		w.conn = wireConnection{present: true, typ: req.Connection.Type, data: data}
	}
	res, perr := r.poll(ctx, &w)
	if perr != nil {
		return PollResult{}, perr
	}
	for i, it := range res.Items {
		v, err := DecodeJSON(it.(json.RawMessage))
		if err != nil {
			return PollResult{}, &Error{Code: "invalid_output", Message: err.Error()}
		}
		res.Items[i] = v
	}
	return res, nil
}

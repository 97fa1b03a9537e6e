package host

import (
	"fmt"

	"github.com/flowd/flowd/connectors/sdk"
	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
)

// compileSchemas compiles, once per started instance, the schemas every call is checked
// against. validateManifest has compiled them already, so a failure here means the two
// disagree: the manifest is refused all the same.
func compileSchemas(name string, m *sdk.Manifest) (*sdk.Schemas, error) {
	s, err := sdk.CompileSchemas(*m)
	if err != nil {
		return nil, fmt.Errorf("connector %q: %w: %w", name, ErrInvalidManifest, err)
	}
	return s, nil
}

// checkInvocation refuses an item whose config or input its action's schemas refuse
// (sdk.CodeInvalidConfig, sdk.CodeInvalidInput, permanent, with the problems' paths), so the
// connector never sees it. It checks the JSON as it would travel: templates are rendered and
// raw fields (sdk.RawFields) hold the flow's value as it stands, which is what the connector
// gets and its schema describes.
func (inst *instance) checkInvocation(pi *connectorv1.Invocation) error {
	if e := inst.schemas.CheckInvocation(pi.GetAction(), pi.GetConfigJson(), pi.GetInputJson()); e != nil {
		return e
	}
	return nil
}

// checkPoll is checkInvocation for a poll's config.
func (inst *instance) checkPoll(pr *connectorv1.PollRequest) error {
	if e := inst.schemas.CheckPoll(pr.GetTrigger(), pr.GetConfigJson()); e != nil {
		return e
	}
	return nil
}

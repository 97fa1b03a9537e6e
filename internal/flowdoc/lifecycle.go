package flowdoc

import "fmt"

// Lifecycle actions: what moves a flow from one status to another. Start and Stop are the
// owner's (API); Started, Stopped and Fail are the router's.
type Action string

// The actions.
const (
	ActionStart   Action = "start"
	ActionStop    Action = "stop"
	ActionStarted Action = "started" // the router runs the flow's trigger
	ActionStopped Action = "stopped" // the router no longer runs it
	ActionFail    Action = "fail"    // the router cannot run it; StatusReason says why
)

// lifecycle is the flow state machine, the one definition the API and the router both use:
// action → current status → next status. A status not listed for an action either already
// satisfies it (settled) or refuses it.
var lifecycle = map[Action]map[string]string{
	ActionStart: {
		StatusInactive: StatusStarting,
		StatusFailed:   StatusStarting,
	},
	ActionStop: {
		StatusActive: StatusStopping,
		// A start not yet confirmed can be withdrawn: the router's confirmation then finds
		// the flow stopping and leaves it to the stop.
		StatusStarting: StatusStopping,
		// A failed flow runs nothing, so there is nothing to wait for.
		StatusFailed: StatusInactive,
	},
	ActionStarted: {StatusStarting: StatusActive},
	ActionStopped: {StatusStopping: StatusInactive},
	ActionFail: {
		StatusStarting: StatusFailed,
		StatusActive:   StatusFailed,
	},
}

// settled lists, per action, the statuses in which the action has nothing left to do, so
// repeating it is not an error (start and stop are idempotent).
var settled = map[Action][]string{
	ActionStart:   {StatusStarting, StatusActive},
	ActionStop:    {StatusStopping, StatusInactive},
	ActionStarted: {StatusActive},
	ActionStopped: {StatusInactive},
	ActionFail:    {StatusFailed},
}

// Next is the status action moves a flow in status from to, and whether it applies at all.
func Next(action Action, from string) (string, bool) {
	to, ok := lifecycle[action][from]
	return to, ok
}

// Settled reports whether a flow in status already is where action would take it.
func Settled(action Action, status string) bool {
	for _, s := range settled[action] {
		if s == status {
			return true
		}
	}
	return false
}

// Refusal explains why action cannot be applied to a flow in status, for a 409; it is empty
// when the action applies or is settled.
func Refusal(action Action, status string) string {
	if _, ok := Next(action, status); ok || Settled(action, status) {
		return ""
	}
	switch {
	case action == ActionStart && status == StatusStopping:
		return "flow is stopping; start it again once it is inactive"
	default:
		return fmt.Sprintf("flow is %s; it cannot be %s from there", status, pastTense(action))
	}
}

func pastTense(a Action) string {
	switch a {
	case ActionStart:
		return "started"
	case ActionStop:
		return "stopped"
	case ActionFail:
		return "marked failed"
	default:
		return "marked " + string(a)
	}
}

// Editable reports whether a flow in status may be changed or deleted: only when it runs
// nothing (inactive, or failed).
func Editable(status string) bool {
	return status == StatusInactive || status == StatusFailed
}

// Runs reports whether routers should run the flow's trigger in status.
func Runs(status string) bool {
	return status == StatusStarting || status == StatusActive
}

// StatusReason says why a flow is in its status; set with StatusFailed.
type StatusReason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Reason codes of a failed flow.
const (
	// ReasonTopicDenied: flowd is not authorised to use a topic the flow needs.
	ReasonTopicDenied = "topic_denied"
	// ReasonTopicInvalid: a topic the flow needs is invalid or refused by the broker's policy.
	ReasonTopicInvalid = "topic_invalid"
	// ReasonTriggerInvalid: the trigger's configuration cannot be run.
	ReasonTriggerInvalid = "trigger_invalid"
	// ReasonRevisionUnusable: the flow's revision is missing or does not compile.
	ReasonRevisionUnusable = "revision_unusable"
	// ReasonStartFailed: the start kept failing for a reason that may pass; start it again.
	ReasonStartFailed = "start_failed"
)

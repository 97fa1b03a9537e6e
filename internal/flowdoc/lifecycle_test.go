package flowdoc

import (
	"strings"
	"testing"
)

func TestLifecycleTable(t *testing.T) {
	t.Parallel()
	const refused = "refused"
	const settled = "settled"
	// want[action][status]: the next status, or settled (nothing to do), or refused (409).
	want := map[Action]map[string]string{
		ActionStart: {
			StatusInactive: StatusStarting, StatusFailed: StatusStarting,
			StatusStarting: settled, StatusActive: settled, StatusStopping: refused,
		},
		ActionStop: {
			StatusActive: StatusStopping, StatusStarting: StatusStopping, StatusFailed: StatusInactive,
			StatusStopping: settled, StatusInactive: settled,
		},
		ActionStarted: {
			StatusStarting: StatusActive, StatusActive: settled,
			StatusInactive: refused, StatusStopping: refused, StatusFailed: refused,
		},
		ActionStopped: {
			StatusStopping: StatusInactive, StatusInactive: settled,
			StatusActive: refused, StatusStarting: refused, StatusFailed: refused,
		},
		ActionFail: {
			StatusStarting: StatusFailed, StatusActive: StatusFailed, StatusFailed: settled,
			StatusInactive: refused, StatusStopping: refused,
		},
	}
	for action, byStatus := range want {
		for _, status := range Statuses {
			w, ok := byStatus[status]
			if !ok {
				t.Fatalf("%s from %s: no expectation", action, status)
			}
			next, applies := Next(action, status)
			got := next
			switch {
			case applies && Settled(action, status):
				t.Fatalf("%s from %s both applies and is settled", action, status)
			case Settled(action, status):
				got = settled
			case !applies:
				got = refused
			}
			if got != w {
				t.Errorf("%s from %s: got %s, want %s", action, status, got, w)
			}
			if msg := Refusal(action, status); (msg != "") != (w == refused) {
				t.Errorf("%s from %s: refusal %q", action, status, msg)
			}
		}
	}
	if msg := Refusal(ActionStart, StatusStopping); !strings.Contains(msg, "stopping") || !strings.Contains(msg, "inactive") {
		t.Errorf("start while stopping: %q does not say what to wait for", msg)
	}
}

func TestOnlyIdleFlowsAreEditableAndOnlyLiveOnesRun(t *testing.T) {
	t.Parallel()
	for _, s := range Statuses {
		editable := s == StatusInactive || s == StatusFailed
		runs := s == StatusStarting || s == StatusActive
		if Editable(s) != editable || Runs(s) != runs {
			t.Errorf("%s: editable %v runs %v", s, Editable(s), Runs(s))
		}
	}
}

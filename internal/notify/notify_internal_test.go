package notify

import (
	"strings"
	"testing"
)

// A flow's name cannot add a header to a failure mail.
func TestMailSubjectKeepsTheFlowNameOnOneLine(t *testing.T) {
	t.Parallel()
	msg := message{Event: "execution.failed", FlowName: "orders\r\nBcc: everyone@example.com", Count: 1}
	raw := mailText("flowd@test", []string{"ops@example.com"}, msg)
	for _, line := range strings.Split(raw, "\r\n") {
		if strings.HasPrefix(line, "Bcc:") {
			t.Fatalf("the flow name started a header:\n%s", raw)
		}
	}
	if !strings.Contains(raw, "Subject: [flowd] orders  Bcc: everyone@example.com: execution failed\r\n") {
		t.Fatalf("subject:\n%s", raw)
	}
}

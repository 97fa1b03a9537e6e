package cli

import (
	"bytes"
	"strings"
	"testing"
)

func run(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errb.String(), err
}

func TestValidateReportsEachDocument(t *testing.T) {
	out, errOut, err := run("validate", "../../deployments/examples/hello-flow.json", "../../schemas/testdata/flows/invalid/cycle.json")
	if err == nil || !strings.Contains(err.Error(), "1 of 2 documents are invalid") {
		t.Fatalf("want a failure naming the count, got %v", err)
	}
	if !strings.Contains(out, "hello-flow.json: ok") {
		t.Fatalf("stdout: %q", out)
	}
	if !strings.Contains(errOut, "cycle.json: /graph/edges/") || !strings.Contains(errOut, "(cycle)") {
		t.Fatalf("stderr: %q", errOut)
	}
}

func TestFlowsWithoutTokenSaysWhatToDo(t *testing.T) {
	t.Setenv("FLOWD_TOKEN", "")
	t.Setenv("FLOWD_ADMIN_TOKEN", "")
	_, _, err := run("flows", "list", "--token", "")
	if err == nil || !strings.Contains(err.Error(), "FLOWD_TOKEN") {
		t.Fatalf("got %v", err)
	}
}

// Package archtest checks how flowd's packages may depend on each other.
package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The core (the records, the execution store, the graph evaluator, flow documents) stands on
// its own types: a change to the connector plugin protocol must not reach it. So none of them
// depends, even indirectly, on the connector SDK, go-plugin or gRPC; except the SDK's
// schemacheck, which depends on nothing but the schema library and is how schema failures
// read everywhere.
func TestCoreDoesNotDependOnThePluginStack(t *testing.T) {
	core := []string{
		"github.com/flowd/flowd/internal/store",
		"github.com/flowd/flowd/internal/envelope",
		"github.com/flowd/flowd/router/graph",
		"github.com/flowd/flowd/internal/flowdoc",
	}
	forbidden := []string{
		"github.com/flowd/flowd/connectors/sdk",
		"github.com/hashicorp/go-plugin",
		"google.golang.org/grpc",
	}
	for _, pkg := range core {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %v", pkg, deps)
		}
		for _, d := range deps {
			if d == "github.com/flowd/flowd/connectors/sdk/schemacheck" {
				continue
			}
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
}

// The connector SDK is a module of its own: a connector that depends on it gets the plugin
// stack and nothing of flowd's server (no store, no Kafka, no Redis, no HTTP framework).
func TestSDKModuleStandsAlone(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./...")
	cmd.Dir = "../../connectors/sdk"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps in connectors/sdk: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/hashicorp/go-plugin") {
		t.Fatalf("the SDK's dependencies lack go-plugin: %v", deps)
	}
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d, "github.com/flowd/flowd/") && !strings.HasPrefix(d, "github.com/flowd/flowd/connectors/sdk"):
			t.Errorf("the SDK depends on flowd's %s", d)
		case strings.HasPrefix(d, "github.com/segmentio/"), strings.HasPrefix(d, "github.com/redis/"), strings.HasPrefix(d, "github.com/gofiber/"):
			t.Errorf("the SDK depends on %s", d)
		}
	}
}

// The error shape people see is one package without HTTP in it; answering HTTP requests with
// it is internal/problem/httpproblem's alone, shared by every role.
func TestProblemKnowsNoHTTP(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/flowd/flowd/internal/problem").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, "github.com/gofiber/") || strings.HasPrefix(d, "github.com/valyala/") || d == "net/http" {
			t.Errorf("internal/problem depends on %s", d)
		}
	}
}

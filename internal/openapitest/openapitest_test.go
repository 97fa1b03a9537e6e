package openapitest

import (
	"net/http"
	"strings"
	"testing"
)

func TestDocumentIsValidOpenAPI31(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.Model.Version != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", s.Model.Version)
	}
}

func TestCheck(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	json := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer t"}}
	flow := `{"name":"a","graph":{"nodes":[{"id":"h","type":"trigger.webhook"}],"edges":[]}}`
	for _, c := range []struct {
		name string
		x    Exchange
		want string // in the error; "" for none
	}{
		{"a valid exchange", Exchange{Method: "POST", Target: "/api/v1/flows", Header: json, Body: []byte(flow), Status: 201, ResponseHeader: json,
			ResponseBody: []byte(`{"data":` + strings.Replace(flow, `{"name"`, `{"id":"f1","status":"inactive","revision":1,"name"`, 1) + `}`)}, ""},
		{"a refused invalid request", Exchange{Method: "POST", Target: "/api/v1/flows", Header: json, Body: []byte(`{"name":1}`), Status: 400, ResponseHeader: json,
			ResponseBody: []byte(`{"errors":[{"code":"type","message":"m","path":"/name"}]}`)}, ""},
		{"an accepted invalid request", Exchange{Method: "POST", Target: "/api/v1/flows", Header: json, Body: []byte(`{"name":1}`), Status: 201, ResponseHeader: json,
			ResponseBody: []byte(`{"data":` + flow + `}`)}, "the request does not match"},
		{"an answer of the wrong shape", Exchange{Method: "GET", Target: "/api/v1/flows/x", Status: 404, ResponseHeader: json,
			ResponseBody: []byte(`{"error":"nope"}`)}, "answer does not match"},
		{"an undocumented route that is served", Exchange{Method: "GET", Target: "/api/v1/nowhere", Status: 200}, "not in the OpenAPI document"},
		{"an undocumented route that is not served", Exchange{Method: "GET", Target: "/api/v1/nowhere", Status: 404, ResponseHeader: json,
			ResponseBody: []byte(`{"errors":[{"code":"not_found","message":"m"}]}`)}, ""},
		{"a wildcard tail", Exchange{Method: "HEAD", Target: "/hooks/f1/a/b/c", Status: 200}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.Check(c.x)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

package controlplane_test

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"testing"
	"testing/fstest"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/openapitest"
	"github.com/flowd/flowd/internal/store"
)

// The console's files are public: the app asks for a token itself. Mounting it changes no
// answer of the API: unknown paths are still 404, known ones with another method 405, and the
// FlowMate routes at the root still want a token. No request here reaches the store.
func TestConsoleIsServedBesideTheAPI(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	app := controlplane.New(controlplane.Config{Store: store.New(rdb, "console:"), Console: fstest.MapFS{
		"index.html":         {Data: []byte("<!doctype html><title>flowd</title>")},
		"favicon.svg":        {Data: []byte("<svg/>")},
		"assets/index-1.js":  {Data: []byte("console.log(1)")},
		"assets/index-1.css": {Data: []byte("body{}")},
	}})
	for _, tc := range []struct {
		method, target string
		status         int
		code           string // of the error answer
	}{
		{"GET", "/", 200, ""},
		{"HEAD", "/", 200, ""},
		{"GET", "/assets/index-1.js", 200, ""},
		{"GET", "/assets/index-1.css", 200, ""},
		{"GET", "/favicon.svg", 200, ""},
		{"GET", "/assets/nope.js", 404, "not_found"},
		{"GET", "/assets/../index.html", 404, "not_found"},
		{"GET", "/nope", 404, "not_found"},
		{"GET", "/no/such/route", 404, "not_found"},
		{"POST", "/", 404, "not_found"},
		{"GET", "/flows", 401, "unauthorized"},
		{"GET", "/users", 401, "unauthorized"},
		{"GET", "/api/v1/flows", 401, "unauthorized"},
		{"GET", "/api/v1/no-such-thing", 404, "not_found"},
		{"PUT", "/api/v1/flows", 405, "method_not_allowed"},
		{"DELETE", "/users", 405, "method_not_allowed"},
	} {
		req := httptest.NewRequest(tc.method, tc.target, nil)
		res, err := app.Test(req, 10_000)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.target, err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if tc.method != "HEAD" { // the document has HEAD as the GET it is, without a body to check
			openapitest.Validate(t, openapitest.Exchange{Method: tc.method, Target: tc.target, Header: req.Header,
				Status: res.StatusCode, ResponseHeader: res.Header, ResponseBody: body})
		}
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: %d %.200s, want %d", tc.method, tc.target, res.StatusCode, body, tc.status)
			continue
		}
		if tc.code == "" || tc.method == "HEAD" {
			continue
		}
		var env struct {
			Errors []struct{ Code string } `json:"errors"`
		}
		if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 || env.Errors[0].Code != tc.code {
			t.Errorf("%s %s: %.200s, want the error %s", tc.method, tc.target, body, tc.code)
		}
	}
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// overLimit posts a body of n bytes to each path and wants 413 with the error envelope naming
// the limit on every one, read by two kinds of client: net/http's, which reads the answer
// while it still sends, and one that sends the whole body before reading anything. The body
// is far larger than the socket buffers, so both are mid-upload when refused; a connection
// closed under them (a reset) fails the first one now and then and the second one always.
func overLimit(t *testing.T, base, token, limit string, n int, paths ...string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	body := strings.Repeat("a", n)
	want := `{"errors":[{"code":"too_large","message":"request body is larger than the limit of ` + limit + `","path":""}]}`
	check := func(how, path string, res *http.Response) {
		t.Helper()
		raw, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge || res.Header.Get("Content-Type") != "application/json" || string(raw) != want {
			t.Fatalf("POST %s (%s): %d %s %s", path, how, res.StatusCode, res.Header.Get("Content-Type"), raw)
		}
	}
	for _, path := range paths {
		for i := range 3 {
			req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("POST %s (net/http #%d): %v", path, i, err)
			}
			check("net/http", path, res)
		}
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: flowd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, token, n, body); err != nil {
			t.Fatalf("POST %s (whole body first): the connection broke while sending: %v", path, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("POST %s (whole body first): %v", path, err)
		}
		check("whole body first", path, res)
		_ = conn.Close()
	}
}

// Every kind of route answers a body over the limit alike: webhooks (/hooks, /webhooks), the
// control plane (/api/v1) and the FlowMate partner routes (/flows), both in `flowd dev`, whose
// one listener reads every body before dispatching, and in the api role on its own (the
// ingest role's listener is ingest.Server.Serve, tested in package ingest).
func TestBodyOverTheLimitIs413OnEveryRoute(t *testing.T) {
	paths := []string{"/hooks/f1", "/hooks/f1/a/b", "/webhooks/f1", "/api/v1/flows", "/flows"}
	t.Run("dev", func(t *testing.T) {
		p := startPipeline(t) // body limit 1 MiB
		overLimit(t, p.base, p.token, "1 MiB", 16<<20, paths...)
		if st, _ := p.get("/api/v1/flows", p.token); st != http.StatusOK {
			t.Fatalf("after the refusals: GET /api/v1/flows %d", st)
		}
	})
	t.Run("api", func(t *testing.T) {
		p := newPipeline(t, 1, connectorPolicy{})
		p.startAPIRole()
		overLimit(t, p.base, p.token, "64 KiB", 16<<20, "/api/v1/flows", "/api/v1/flows/f1", "/flows", "/nowhere")
	})
}

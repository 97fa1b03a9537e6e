package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchPayload is the 1 KiB JSON document every phase sends (and the limit produces).
func benchPayload() []byte {
	head := `{"id":"c-000042","firstName":"Ada","lastName":"Lovelace","email":"ada@example.com","amount":1234.5,"tags":["a","b","c"],"pad":"`
	tail := `"}`
	pad := strings.Repeat("x", 1024-len(head)-len(tail))
	p := []byte(head + pad + tail)
	if len(p) != 1024 || !json.Valid(p) {
		panic("bench payload is not 1 KiB of JSON")
	}
	return p
}

// newClient is a keep-alive HTTP client with a connection per concurrent sender.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxConnsPerHost:     conns,
			MaxIdleConnsPerHost: conns,
			MaxIdleConns:        conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// post sends one webhook and returns the status and the execution id of a 2xx.
func post(ctx context.Context, hc *http.Client, url string, payload []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, "", nil
	}
	// {"data":{"executionId":"..."}}: cut rather than decode, the load generator shares the cores.
	_, rest, ok := bytes.Cut(body, []byte(`"executionId":"`))
	id, _, ok2 := bytes.Cut(rest, []byte(`"`))
	if !ok || !ok2 {
		return resp.StatusCode, "", fmt.Errorf("2xx without an execution id: %q", body)
	}
	return resp.StatusCode, string(id), nil
}

// ingestLevel is one closed-loop ingest measurement.
type ingestLevel struct {
	Clients    int     `json:"clients"`
	Seconds    float64 `json:"seconds"`
	Accepted   int64   `json:"accepted"`
	AcceptedPS int     `json:"acceptedPerSec"`
	Refused    int64   `json:"refused"` // non-2xx answers
	Errors     int64   `json:"errors"`  // transport errors
	P50ms      float64 `json:"p50ms"`
	P99ms      float64 `json:"p99ms"`
	P999ms     float64 `json:"p999ms"`
	MaxMs      float64 `json:"maxMs"`
	RatioLimit float64 `json:"ratioToLimit"`
	// IngestCPUus is the ingest process's CPU time per accepted webhook, in microseconds.
	IngestCPUus float64            `json:"ingestCpuUsPerAccepted"`
	MachineCPU  float64            `json:"machineCpuPct"`
	ProcessCPU  map[string]float64 `json:"processCpuPct"`
}

// closedLoop runs clients senders POSTing payload to url as fast as they are answered for d
// (after warm), and measures the 202s of the d window.
func closedLoop(ctx context.Context, url string, clients int, warm, d time.Duration, payload []byte) ingestLevel {
	hc := newClient(clients)
	defer hc.CloseIdleConnections()
	start := time.Now()
	from, end := start.Add(warm), start.Add(warm+d)
	var accepted, refused, errs atomic.Int64
	lats := make([]latencies, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for {
				t0 := time.Now()
				if t0.After(end) || ctx.Err() != nil {
					return
				}
				status, _, err := post(ctx, hc, url, payload)
				t1 := time.Now()
				if t0.Before(from) || t1.After(end) {
					continue
				}
				switch {
				case err != nil:
					errs.Add(1)
				case status == http.StatusAccepted:
					accepted.Add(1)
					lats[i] = append(lats[i], t1.Sub(t0))
				default:
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	var all latencies
	for _, l := range lats {
		all = append(all, l...)
	}
	return ingestLevel{
		Clients: clients, Seconds: d.Seconds(), Accepted: accepted.Load(),
		AcceptedPS: int(float64(accepted.Load()) / d.Seconds()),
		Refused:    refused.Load(), Errors: errs.Load(),
		P50ms: all.pct(50), P99ms: all.pct(99), P999ms: all.pct(99.9), MaxMs: all.pct(100),
	}
}

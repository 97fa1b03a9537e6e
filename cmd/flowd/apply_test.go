package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// apply and export see every flow, however many pages the list takes.
func TestAllFlowsReadsEveryPage(t *testing.T) {
	const n = 230
	var pages []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("page[size]"))
		number, _ := strconv.Atoi(r.URL.Query().Get("page[number]"))
		pages = append(pages, r.URL.Query().Get("page[number]"))
		data := []map[string]any{}
		for i := (number - 1) * size; i < min(number*size, n); i++ {
			data = append(data, map[string]any{"id": fmt.Sprint("f", i), "name": fmt.Sprint("flow ", i)})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
	}))
	defer srv.Close()
	flows, err := allFlows(context.Background(), newClient(srv.URL, "tok"))
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != n || flows[n-1].ID != fmt.Sprint("f", n-1) || fmt.Sprint(pages) != "[1 2 3]" {
		t.Fatalf("%d flows from pages %v", len(flows), pages)
	}
}

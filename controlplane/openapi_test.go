package controlplane_test

import (
	"bytes"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/openapitest"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/schemas"
)

// The document is served as published, without a token, and is valid OpenAPI 3.1.
func TestOpenAPIDocumentIsServed(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	app := controlplane.New(controlplane.Config{Store: store.New(rdb, "openapi:")})
	res, err := app.Test(httptest.NewRequest("GET", controlplane.PathOpenAPI, nil), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q: %.300s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if !bytes.Equal(body, schemas.OpenAPI()) {
		t.Fatal("the served document differs from schemas/openapi.json")
	}
	spec, err := openapitest.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Model.Version != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", spec.Model.Version)
	}
}

package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/store"
)

// The API's hot paths through the whole Echo stack (middleware, auth,
// strict JSON, validation) against the real PostgreSQL and Redis; only the
// TCP hop is left out. Run with make bench.

// BenchmarkAPIEnqueueTask: POST /api/v1/tasks with an API key, one Redis
// round trip for the enqueue.
func BenchmarkAPIEnqueueTask(b *testing.B) {
	p := setupFullWith(b, httpapi.Options{})
	key := p.apiKey(b, "bench")
	body := map[string]any{"type": "system:ping", "payload": map[string]any{}}
	b.ReportAllocs()
	for b.Loop() {
		if rec := p.call(b, "POST", "/api/v1/tasks", key, body, nil); rec.Code != http.StatusAccepted {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkAPICreateOrder: POST /api/v1/orders with a JWT: one transaction
// writing the order and its two outbox rows (the relay is not running).
func BenchmarkAPICreateOrder(b *testing.B) {
	p := setupFullWith(b, httpapi.Options{})
	_, jwt := p.register(b, "bench@example.com")
	body := map[string]any{"currency": "EUR", "items": []map[string]any{
		{"sku": "book", "quantity": 2, "unit_price_cents": 1250}, {"sku": "pen", "quantity": 1, "unit_price_cents": 199}}}
	b.ReportAllocs()
	for b.Loop() {
		if rec := p.call(b, "POST", "/api/v1/orders", jwt, body, nil); rec.Code != http.StatusCreated {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkAPIListPosts: GET /api/v1/posts, a page of 20 of 200 published
// posts by 10 authors, with author names (one query plus the count).
func BenchmarkAPIListPosts(b *testing.B) {
	p := setupFullWith(b, httpapi.Options{})
	ctx := context.Background()
	for a := range 10 {
		u, _ := p.register(b, fmt.Sprintf("author%d@example.com", a))
		for i := range 20 {
			if _, err := store.NewPosts(p.db).Create(ctx, u.ID, fmt.Sprintf("Post %d", i), "Text", true); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if rec := p.call(b, "GET", "/api/v1/posts?limit=20&skip=40", "", nil, nil); rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

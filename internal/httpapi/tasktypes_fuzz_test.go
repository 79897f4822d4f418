package httpapi_test

import (
	"net/http"
	"testing"
)

// FuzzTaskLimits: whatever body PUT /task-types/{type}/limits gets, never
// a 5xx, and what it accepted reads back (GET, the catalog) without one.
func FuzzTaskLimits(f *testing.F) {
	for _, s := range []string{
		`{"rate":{"limit":10,"per":"1s","burst":10,"key":"order_id"},"concurrency":{"max":1,"key":"order_id"}}`,
		`{"rate":{"limit":10,"per":"1y"}}`,
		`{"rate":{"limit":9223372036854775807,"per":"2562047h"}}`,
		`{"rate":{"limit":1,"per":"100ms","burst":-1}}`,
		`{"concurrency":{"max":0,"key":"\u0000"}}`,
		`{"rate":null,"concurrency":null}`,
		`{"rate":[],"extra":1}`,
		`null`,
	} {
		f.Add(s)
	}
	b := setupInput(f)
	admin := "Bearer " + token
	f.Fuzz(func(t *testing.T, body string) {
		rec := b.call(t, "PUT", "/api/v1/task-types/order:process/limits", admin, body, nil)
		no5xx(t, rec.Code, "put limits", rec.Body.String())
		if rec.Code != http.StatusOK {
			return
		}
		rec = b.call(t, "GET", "/api/v1/task-types/order:process/limits", admin, nil, nil)
		no5xx(t, rec.Code, "get limits", rec.Body.String())
		rec = b.call(t, "GET", "/api/v1/task-types", admin, nil, nil)
		no5xx(t, rec.Code, "task types", rec.Body.String())
	})
}

package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// API keys are cached for a moment, but a deleted key stops working soon
// after (within the cache's two seconds), while the other keys go on working.
func TestDeletedAPIKeyStopsWorking(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	revoked, kept := b.apiKey(t, "billing"), b.apiKey(t, "reports")
	for _, key := range []string{revoked, kept, revoked} { // the second use of a key is served from the cache
		if rec := b.call(t, "GET", "/api/v1/queues", key, nil, nil); rec.Code != http.StatusOK {
			t.Fatalf("queues with a live key: %d %s", rec.Code, rec.Body)
		}
	}
	if _, err := b.db.ExecContext(context.Background(), `DELETE FROM api_keys WHERE name = 'billing'`); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		rec := b.call(t, "GET", "/api/v1/queues", revoked, nil, nil)
		return rec.Code == http.StatusUnauthorized && strings.Contains(rec.Body.String(), "invalid API key")
	}, "the deleted key is still accepted")
	if rec := b.call(t, "GET", "/api/v1/queues", kept, nil, nil); rec.Code != http.StatusOK {
		t.Fatalf("queues with the other key: %d %s", rec.Code, rec.Body)
	}
	// Once refused, the deleted key stays refused.
	if rec := b.call(t, "GET", "/api/v1/queues", revoked, nil, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("deleted key, asked again: %d %s", rec.Code, rec.Body)
	}
}

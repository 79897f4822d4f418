package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
)

// Asynqmon answers the inspector's errors with plain-text 500s; behind
// /monitoring they are JSON 4xx naming what went wrong.
func TestMonitoringErrorsAre4xxJSON(t *testing.T) {
	t.Parallel()
	b := setupOps(t, true)
	id := b.enqueuePing(t)
	cases := []struct {
		name         string
		method, path string
		status       int
		code         string
	}{
		{"unknown queue", "GET", "/monitoring/api/queues/nope", http.StatusNotFound, "not_found"},
		{"unknown queue's tasks", "GET", "/monitoring/api/queues/nope/pending_tasks", http.StatusNotFound, "not_found"},
		{"unknown task", "GET", "/monitoring/api/queues/default/tasks/nope", http.StatusNotFound, "not_found"},
		{"delete a queue with tasks", "DELETE", "/monitoring/api/queues/default", http.StatusBadRequest, "bad_request"},
		{"archive an unknown queue's task", "POST", "/monitoring/api/queues/nope/pending_tasks/" + id + ":archive", http.StatusNotFound, "not_found"},
		{"delete an unknown queue's task", "DELETE", "/monitoring/api/queues/nope/pending_tasks/" + id, http.StatusNotFound, "not_found"},
	}
	for _, tc := range cases {
		rec := b.asUser(tc.method, tc.path, "alice", alicePassword)
		var e errorBody
		if rec.Code != tc.status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s: %s %s = %d %q %s, want %d %s", tc.name, tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body, tc.status, tc.code)
		}
	}
	// Successful answers pass through untouched.
	if rec := b.asUser("GET", "/monitoring/api/queues", "alice", alicePassword); rec.Code != http.StatusOK {
		t.Fatalf("queues: %d %s", rec.Code, rec.Body)
	}
}

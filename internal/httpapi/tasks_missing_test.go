package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// GET /api/v1/tasks/{id} of a task in no queue says why: from its outbox
// row when it has one (sent: its record expired after its type's
// retention; waiting; dead), otherwise both possibilities with every
// type's retention.
func TestTaskGetExplainsMissingTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	redisURL, _ := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	srv := httpapi.NewServer(httpapi.Options{APIToken: token}, httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q})
	get := func(id string) (int, errorBody) {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		var e errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("GET %s: %d %s", id, rec.Code, rec.Body)
		}
		return rec.Code, e
	}

	ob := store.NewOutbox(d)
	add := func(typ, payload string) string {
		t.Helper()
		id, err := ob.Add(ctx, typ, json.RawMessage(payload), "")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	sent := add(tasks.TypeEmailWelcome, `{"user_id":1}`)
	if err := ob.MarkSent(ctx, sent); err != nil {
		t.Fatal(err)
	}
	sentPing := add(tasks.TypeSystemPing, `{}`)
	if err := ob.MarkSent(ctx, sentPing); err != nil {
		t.Fatal(err)
	}
	waiting := add(tasks.TypeOrderProcess, `{"order_id":1}`)
	dead := add(tasks.TypeOrderProcess, `{"order_id":2}`)
	if err := ob.MarkDead(ctx, dead, "unknown task type"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, id, code string
		says           []string
	}{
		{"sent email", sent, "task_expired", []string{sent, "email:welcome", "completed", "expired after its type's retention (24h)"}},
		{"sent ping", sentPing, "task_expired", []string{"system:ping", "retention (nothing kept)"}},
		{"outbox row waiting", waiting, "task_not_enqueued", []string{"order:process", "not enqueued yet"}},
		{"outbox row dead", dead, "task_not_enqueued", []string{"never enqueued", "unknown task type"}},
		{"unknown UUID", "7f1d2c3b-0000-4000-8000-000000000001", "not_found", []string{"never enqueued", "expired", "system:ping nothing kept", "email:welcome 24h", "maintenance:cleanup 168h"}},
		{"unknown name", "my-task-1", "not_found", []string{"never enqueued", "system:ping nothing kept"}},
	} {
		status, e := get(tc.id)
		if status != http.StatusNotFound || e.Error.Code != tc.code {
			t.Errorf("%s: %d %q, want 404 %q (%s)", tc.name, status, e.Error.Code, tc.code, e.Error.Message)
		}
		for _, s := range tc.says {
			if !strings.Contains(e.Error.Message, s) {
				t.Errorf("%s: message %q does not say %q", tc.name, e.Error.Message, s)
			}
		}
	}
}

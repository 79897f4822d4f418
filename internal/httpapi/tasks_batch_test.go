package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
)

type batchAnswer struct {
	Tasks []struct {
		ID    string `json:"id"`
		Type  string `json:"type"`
		Queue string `json:"queue"`
		State string `json:"state"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	} `json:"tasks"`
}

// pendingTasks counts the tasks waiting in every queue of b's Redis DB.
func (b *productBundle) pendingTasks(t *testing.T) int {
	t.Helper()
	snaps, err := b.q.QueueSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range snaps {
		n += s.States["pending"] + s.States["scheduled"]
	}
	return n
}

func TestTaskBatchEnqueuesInOrder(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	key := b.apiKey(t, "svc")
	items := []map[string]any{
		{"type": "system:ping", "payload": map[string]any{}},
		{"type": "system:ping", "queue": "low", "task_id": "batch-a"},
		{"type": "system:ping", "countdown": 60},
	}
	var got batchAnswer
	if rec := b.call(t, "POST", "/api/v1/tasks/batch", key, map[string]any{"tasks": items}, &got); rec.Code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	if len(got.Tasks) != 3 || got.Tasks[1].ID != "batch-a" || got.Tasks[1].Queue != "low" ||
		got.Tasks[0].State != "pending" || got.Tasks[2].State != "scheduled" {
		t.Fatalf("answer = %+v", got)
	}
	if n := b.pendingTasks(t); n != 3 {
		t.Fatalf("%d tasks in Redis, want 3", n)
	}

	// A task_id already in use in its queue is reported on its item; the
	// rest go in.
	items = []map[string]any{{"type": "system:ping", "queue": "low", "task_id": "batch-a"}, {"type": "system:ping"}}
	got = batchAnswer{}
	if rec := b.call(t, "POST", "/api/v1/tasks/batch", key, map[string]any{"tasks": items}, &got); rec.Code != http.StatusAccepted {
		t.Fatalf("batch with a used task_id: %d %s", rec.Code, rec.Body)
	}
	if got.Tasks[0].State != "conflict" || got.Tasks[0].Error == nil || got.Tasks[0].Error.Code != "conflict" ||
		got.Tasks[1].State != "pending" || got.Tasks[1].Error != nil {
		t.Fatalf("answer = %+v", got)
	}
	if n := b.pendingTasks(t); n != 4 {
		t.Fatalf("%d tasks in Redis, want 4", n)
	}
}

func TestTaskBatchIsValidatedWholeFirst(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	key := b.apiKey(t, "svc")
	ping := map[string]any{"type": "system:ping"}
	many := make([]any, 1001)
	for i := range many {
		many[i] = ping
	}
	cases := []struct {
		name   string
		body   any
		fields []string
	}{
		{"unknown type", map[string]any{"tasks": []any{ping, map[string]any{"type": "nope"}}}, []string{"tasks[1].type"}},
		{"bad payload", map[string]any{"tasks": []any{map[string]any{"type": "system:ping", "payload": map[string]any{"sleep_ms": -1}}, ping}}, []string{"tasks[0].payload.sleep_ms"}},
		{"unknown field", map[string]any{"tasks": []any{ping, ping, map[string]any{"type": "system:ping", "colour": "red"}}}, []string{"tasks[2].colour"}},
		{"wrong kind", map[string]any{"tasks": []any{ping, map[string]any{"type": "system:ping", "max_retry": "3"}}}, []string{"tasks[1].max_retry"}},
		{"not an object", map[string]any{"tasks": []any{ping, 7}}, []string{"tasks[1]"}},
		{"bad queue and eta", map[string]any{"tasks": []any{map[string]any{"type": "system:ping", "queue": "nowhere"}, map[string]any{"type": "system:ping", "eta": "tomorrow"}}}, []string{"tasks[0].queue", "tasks[1].eta"}},
		{"duplicate task_id", map[string]any{"tasks": []any{map[string]any{"type": "system:ping", "task_id": "x"}, ping, map[string]any{"type": "system:ping", "task_id": "x"}}}, []string{"tasks[2].task_id"}},
		{"empty", map[string]any{"tasks": []any{}}, []string{"tasks"}},
		{"too many", map[string]any{"tasks": many}, []string{"tasks"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var eb errorBody
			rec := b.call(t, "POST", "/api/v1/tasks/batch", key, tc.body, &eb)
			if rec.Code != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", rec.Code, rec.Body)
			}
			for _, f := range tc.fields {
				if eb.Error.Fields[f] == "" {
					t.Errorf("fields %v do not name %s", eb.Error.Fields, f)
				}
			}
			if len(eb.Error.Fields) != len(tc.fields) {
				t.Errorf("fields %v, want exactly %v", eb.Error.Fields, tc.fields)
			}
		})
	}
	if n := b.pendingTasks(t); n != 0 {
		t.Fatalf("%d tasks enqueued by invalid batches, want 0", n)
	}
}

func TestTaskBatchIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	key := b.apiKey(t, "svc")
	body := map[string]any{"tasks": []any{map[string]any{"type": "system:ping"}, map[string]any{"type": "system:ping"}}}
	var first, again batchAnswer
	if rec := b.call(t, "POST", "/api/v1/tasks/batch", key, body, &first, "Idempotency-Key", "batch-1"); rec.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	rec := b.call(t, "POST", "/api/v1/tasks/batch", key, body, &again, "Idempotency-Key", "batch-1")
	if rec.Code != http.StatusAccepted || rec.Header().Get("Idempotent-Replayed") != "true" ||
		fmt.Sprint(again) != fmt.Sprint(first) || first.Tasks[0].ID == first.Tasks[1].ID {
		t.Fatalf("replay: %d %+v, first %+v", rec.Code, again, first)
	}
	if n := b.pendingTasks(t); n != 2 {
		t.Fatalf("%d tasks in Redis, want 2", n)
	}
	// Other users and anonymous callers may not use it.
	if rec := b.call(t, "POST", "/api/v1/tasks/batch", "", body, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d", rec.Code)
	}
}

package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
)

type workflowJSON struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
	Steps []struct {
		ID     string   `json:"id"`
		Type   string   `json:"type"`
		State  string   `json:"state"`
		TaskID string   `json:"task_id"`
		After  []string `json:"after"`
	} `json:"steps"`
}

func TestWorkflowStartGetListCancel(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	authz := "Bearer " + token
	body := map[string]any{"name": "demo", "steps": []map[string]any{
		{"id": "a", "type": "system:ping", "payload": map[string]any{"add": 1}, "countdown": 3600},
		{"id": "b", "type": "system:ping", "after": []string{"a"}},
		{"id": "c", "type": "system:ping", "after": []string{"a"}, "if_parent_failed": "run"},
	}}
	var wf workflowJSON
	rec := b.call(t, "POST", "/api/v1/workflows", authz, body, &wf)
	if rec.Code != http.StatusAccepted || wf.State != "running" || len(wf.Steps) != 3 || wf.Name != "demo" {
		t.Fatalf("start: %d %s", rec.Code, rec.Body)
	}
	if wf.Steps[0].State != "enqueued" || wf.Steps[0].TaskID == "" || wf.Steps[1].State != "waiting" || wf.Steps[1].TaskID == "" {
		t.Fatalf("steps: %s", rec.Body)
	}

	var got workflowJSON
	if rec := b.call(t, "GET", "/api/v1/workflows/"+wf.ID, authz, nil, &got); rec.Code != http.StatusOK ||
		got.ID != wf.ID || fmt.Sprint(got.Steps[2].After) != "[a]" {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	// ?wait on a running workflow answers, still running, once the wait ends.
	if rec := b.call(t, "GET", "/api/v1/workflows/"+wf.ID+"?wait=300ms", authz, nil, &got); rec.Code != http.StatusOK || got.State != "running" {
		t.Fatalf("get ?wait: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/workflows/"+wf.ID+"?wait=forever", authz, nil, nil); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("bad wait: %d %s", rec.Code, rec.Body)
	}

	var list struct {
		Data  []workflowJSON `json:"data"`
		Total int            `json:"total"`
	}
	if rec := b.call(t, "GET", "/api/v1/workflows?state=running&limit=5", authz, nil, &list); rec.Code != http.StatusOK ||
		list.Total != 1 || list.Data[0].ID != wf.ID {
		t.Fatalf("list running: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/workflows?state=done", authz, nil, nil); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("bad state: %d %s", rec.Code, rec.Body)
	}

	// Cancel: the queued task is removed from Redis.
	relay := queue.NewRelay(b.db, b.q, testenv.Logger(t), queue.RelayOptions{})
	if _, _, err := relay.RelayOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	taskPath := "/api/v1/tasks/" + wf.Steps[0].TaskID
	if rec := b.call(t, "GET", taskPath, authz, nil, nil); rec.Code != http.StatusOK {
		t.Fatalf("first step's task: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "DELETE", "/api/v1/workflows/"+wf.ID, authz, nil, &got); rec.Code != http.StatusOK || got.State != "cancelled" {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	for _, s := range got.Steps {
		if s.State != "cancelled" {
			t.Fatalf("step %s = %s after cancel", s.ID, s.State)
		}
	}
	if rec := b.call(t, "GET", taskPath, authz, nil, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("first step's task after cancel: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "DELETE", "/api/v1/workflows/"+wf.ID, authz, nil, &got); rec.Code != http.StatusOK || got.State != "cancelled" {
		t.Fatalf("second cancel: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/workflows?state=cancelled", authz, nil, &list); rec.Code != http.StatusOK || list.Total != 1 {
		t.Fatalf("list cancelled: %d %s", rec.Code, rec.Body)
	}
	for _, path := range []string{"/api/v1/workflows/nope", "/api/v1/workflows/00000000-0000-0000-0000-000000000000"} {
		if rec := b.call(t, "GET", path, authz, nil, nil); rec.Code != http.StatusNotFound {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		if rec := b.call(t, "DELETE", path, authz, nil, nil); rec.Code != http.StatusNotFound {
			t.Fatalf("DELETE %s: %d", path, rec.Code)
		}
	}
}

func TestWorkflowInvalidDAGsAre422(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	step := func(id string, after ...string) map[string]any {
		return map[string]any{"id": id, "type": "system:ping", "after": after}
	}
	cases := []struct {
		name  string
		steps []map[string]any
		field string
	}{
		{"cycle", []map[string]any{step("a", "b"), step("b", "a")}, "steps[0].after"},
		{"unknown parent", []map[string]any{step("a"), step("b", "nope")}, "steps[1].after"},
		{"duplicate id", []map[string]any{step("a"), step("a")}, "steps[1].id"},
		{"unknown type", []map[string]any{{"id": "a", "type": "nope"}}, "steps[0].type"},
		{"bad payload", []map[string]any{{"id": "a", "type": "system:ping", "payload": map[string]any{"sleep_ms": -5}}}, "steps[0].payload.sleep_ms"},
		{"unknown queue", []map[string]any{{"id": "a", "type": "system:ping", "queue": "nowhere"}}, "steps[0].queue"},
		{"bad mode", []map[string]any{{"id": "a", "type": "system:ping", "if_parent_failed": "ignore"}}, "steps[0].if_parent_failed"},
		{"no steps", []map[string]any{}, "steps"},
	}
	for _, tc := range cases {
		var e errorBody
		rec := b.call(t, "POST", "/api/v1/workflows", "Bearer "+token, map[string]any{"steps": tc.steps}, &e)
		if rec.Code != http.StatusUnprocessableEntity || e.Error.Fields[tc.field] == "" {
			t.Errorf("%s: %d %s; want 422 naming %s", tc.name, rec.Code, rec.Body, tc.field)
		}
	}
	var n int
	if err := b.db.Get(&n, `SELECT count(*) FROM workflows`); err != nil || n != 0 {
		t.Fatalf("%d workflows stored by invalid requests (%v)", n, err)
	}
}

func TestWorkflowTooManySteps(t *testing.T) {
	t.Parallel()
	b := setupFullWith(t, httpapi.Options{BodyLimit: 1 << 20})
	var sb strings.Builder
	sb.WriteString(`{"steps":[`)
	for i := range workflow.MaxSteps + 1 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"id":"s%d","type":"system:ping"}`, i)
	}
	sb.WriteString("]}")
	var e errorBody
	rec := b.call(t, "POST", "/api/v1/workflows", "Bearer "+token, sb.String(), &e)
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(e.Error.Fields["steps"], "at most 10001") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestWorkflowIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	body := map[string]any{"steps": []map[string]any{{"id": "a", "type": "system:ping", "countdown": 3600}}}
	var first, second workflowJSON
	hdr := []string{"Idempotency-Key", "wf-1"}
	if rec := b.call(t, "POST", "/api/v1/workflows", "Bearer "+token, body, &first, hdr...); rec.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	rec := b.call(t, "POST", "/api/v1/workflows", "Bearer "+token, body, &second, hdr...)
	if rec.Code != http.StatusAccepted || second.ID != first.ID || rec.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	var n int
	if err := b.db.Get(&n, `SELECT count(*) FROM workflows`); err != nil || n != 1 {
		t.Fatalf("%d workflows, want 1 (%v)", n, err)
	}
}

package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

const token = "test-token-0123456789"

type apiBundle struct {
	srv http.Handler
}

func setupAPI(t *testing.T, redisURL string) *apiBundle {
	t.Helper()
	d, _ := testenv.DB(t)
	if redisURL == "" {
		redisURL, _ = testenv.Redis(t)
	}
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	srv := httpapi.NewServer(httpapi.Options{APIToken: token, BodyLimit: 1024},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q})
	return &apiBundle{srv: srv}
}

func (b *apiBundle) do(method, path, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	return rec
}

type errorBody struct {
	Error struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Fields  map[string]string `json:"fields"`
	} `json:"error"`
}

func TestErrorsAreJSON(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	big := `{"type":"system:ping","payload":{"fail":"` + strings.Repeat("x", 2000) + `"}}`
	cases := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		status       int
		code         string
	}{
		{"unknown route", "GET", "/api/v1/nothing", "", nil, 404, "not_found"},
		{"wrong method", "PUT", "/healthz", "", nil, 405, "method_not_allowed"},
		{"no token", "GET", "/api/v1/queues", "", map[string]string{"Authorization": ""}, 401, "unauthorized"},
		{"wrong token", "GET", "/api/v1/queues", "", map[string]string{"Authorization": "Bearer nope"}, 401, "unauthorized"},
		{"basic auth", "GET", "/api/v1/queues", "", map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}, 401, "unauthorized"},
		{"too large", "POST", "/api/v1/tasks", big, nil, 413, "payload_too_large"},
		{"too large chunked", "POST", "/api/v1/tasks", big, map[string]string{"Content-Length": ""}, 413, "payload_too_large"},
		{"empty body", "POST", "/api/v1/tasks", "", nil, 400, "bad_request"},
		{"not json", "POST", "/api/v1/tasks", "type=system:ping", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"trailing data", "POST", "/api/v1/tasks", `{"type":"system:ping"} {}`, nil, 400, "bad_request"},
		{"array body", "POST", "/api/v1/tasks", `[]`, nil, 400, "bad_request"},
		{"unknown task", "GET", "/api/v1/tasks/abc", "", nil, 404, "not_found"},
		{"run unknown task", "POST", "/api/v1/tasks/abc/run", "", nil, 404, "not_found"},
		{"delete unknown task", "DELETE", "/api/v1/tasks/abc", "", nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := b.do(tc.method, tc.path, tc.body, tc.header)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code != tc.code || eb.Error.Message == "" {
				t.Fatalf("body %s, want error code %q", rec.Body, tc.code)
			}
			if rec.Header().Get("X-Request-ID") == "" {
				t.Fatal("no X-Request-ID on an error response")
			}
		})
	}
}

func TestRequestIDIsKeptOrMade(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	rec := b.do("GET", "/healthz", "", map[string]string{"X-Request-ID": "abc-123"})
	if got := rec.Header().Get("X-Request-ID"); got != "abc-123" {
		t.Fatalf("X-Request-ID = %q, want the caller's", got)
	}
	rec = b.do("GET", "/healthz", "", map[string]string{"X-Request-ID": "bad id\twith spaces"})
	if got := rec.Header().Get("X-Request-ID"); got == "" || strings.ContainsAny(got, " \t") {
		t.Fatalf("X-Request-ID = %q, want a fresh, clean one", got)
	}
}

func TestEnqueueLookupDeleteRun(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	rec := b.do("POST", "/api/v1/tasks", `{"type":"system:ping","countdown":3600,"task_id":"later-1"}`, nil)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
	}
	var created struct{ ID, Type, Queue, State string }
	_ = json.Unmarshal(rec.Body.Bytes(), &created)
	if created.ID != "later-1" || created.State != "scheduled" || created.Queue != "default" {
		t.Fatalf("created = %+v", created)
	}

	rec = b.do("GET", "/api/v1/tasks/later-1", "", nil)
	var got map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &got)
	for _, k := range []string{"id", "type", "queue", "state", "retried", "max_retry", "last_error", "next_process_at", "completed_at", "result"} {
		if _, ok := got[k]; !ok {
			t.Errorf("task view lacks %q: %s", k, rec.Body)
		}
	}
	if got["state"] != "scheduled" || got["next_process_at"] == nil {
		t.Fatalf("task = %s", rec.Body)
	}
	// ?queue= narrows the search; the wrong queue does not find it.
	if rec := b.do("GET", "/api/v1/tasks/later-1?queue=low", "", nil); rec.Code != http.StatusNotFound {
		t.Fatalf("wrong queue: %d", rec.Code)
	}

	// Run now: scheduled → pending; running a pending task is a conflict.
	if rec := b.do("POST", "/api/v1/tasks/later-1/run", "", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"state":"pending"`) {
		t.Fatalf("run: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("POST", "/api/v1/tasks/later-1/run", "", nil); rec.Code != http.StatusConflict {
		t.Fatalf("run pending: %d %s", rec.Code, rec.Body)
	}

	// Delete a waiting task.
	if rec := b.do("DELETE", "/api/v1/tasks/later-1", "", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "deleted") {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("GET", "/api/v1/tasks/later-1", "", nil); rec.Code != http.StatusNotFound {
		t.Fatalf("after delete: %d", rec.Code)
	}

	// Queue stats list the configured queues.
	rec = b.do("GET", "/api/v1/queues", "", nil)
	var qs struct {
		Queues []map[string]any `json:"queues"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &qs)
	names := map[string]bool{}
	for _, q := range qs.Queues {
		names[q["queue"].(string)] = true
		for _, k := range []string{"size", "pending", "active", "scheduled", "retry", "archived", "completed", "processed_today", "failed_today", "paused"} {
			if _, ok := q[k]; !ok {
				t.Errorf("queue stats lack %q", k)
			}
		}
	}
	if !names["critical"] || !names["default"] || !names["low"] {
		t.Fatalf("queues = %s", rec.Body)
	}
}

func TestUniqueForRejectsDuplicate(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	body := `{"type":"email:welcome","payload":{"user_id":9},"unique_for":60}`
	if rec := b.do("POST", "/api/v1/tasks", body, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("POST", "/api/v1/tasks", body, nil); rec.Code != http.StatusConflict {
		t.Fatalf("duplicate within unique_for: %d %s", rec.Code, rec.Body)
	}
}

func TestReadyzNamesFailingDependency(t *testing.T) {
	t.Parallel()
	// A Redis address nobody listens on.
	b := setupAPI(t, "redis://"+testenv.FreeAddr(t)+"/0")
	rec := b.do("GET", "/readyz", "", nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
	var body struct {
		Checks map[string]struct{ Status string } `json:"checks"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if body.Checks["redis"].Status != "unavailable" || body.Checks["postgres"].Status != "ok" {
		t.Fatalf("readyz body = %s", rec.Body)
	}
	// Public endpoint: the dependency is named, its address is not.
	if strings.Contains(rec.Body.String(), "127.0.0.1") || strings.Contains(rec.Body.String(), "refused") {
		t.Fatalf("readyz leaks the error: %s", rec.Body)
	}
	if rec := b.do("GET", "/healthz", "", nil); rec.Code != http.StatusOK {
		t.Fatalf("healthz must not depend on Redis: %d", rec.Code)
	}
}

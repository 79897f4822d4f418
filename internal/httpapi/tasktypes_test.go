package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

type limitsBody struct {
	Type   string `json:"type"`
	Limits struct {
		Rate *struct {
			Limit int    `json:"limit"`
			Per   string `json:"per"`
			Burst int    `json:"burst"`
			Key   string `json:"key"`
		} `json:"rate"`
		Concurrency *struct {
			Max int    `json:"max"`
			Key string `json:"key"`
		} `json:"concurrency"`
	} `json:"limits"`
}

func TestTaskTypeCatalog(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	rec := b.do("GET", "/api/v1/task-types", "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var got struct {
		Data []struct {
			Type          string          `json:"type"`
			Queue         string          `json:"queue"`
			MaxRetry      *int            `json:"max_retry"`
			Timeout       float64         `json:"timeout"`
			Retention     float64         `json:"retention"`
			RetryBase     float64         `json:"retry_base"`
			RetryCap      float64         `json:"retry_cap"`
			PayloadFields []string        `json:"payload_fields"`
			Limits        json.RawMessage `json:"limits"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	byType := map[string]int{}
	for i, d := range got.Data {
		byType[d.Type] = i
		if d.Queue == "" || d.MaxRetry == nil || d.Timeout <= 0 || d.Retention < 0 || d.RetryBase <= 0 || d.RetryCap <= 0 || len(d.Limits) == 0 {
			t.Errorf("incomplete entry: %+v", d)
		}
	}
	i, ok := byType["email:welcome"]
	if !ok || len(got.Data) < 5 {
		t.Fatalf("catalog: %s", rec.Body)
	}
	if e := got.Data[i]; e.Queue != "critical" || e.Timeout != 60 || strings.Join(e.PayloadFields, ",") != "user_id" {
		t.Fatalf("email:welcome: %+v", e)
	}
}

func TestTaskTypeLimits(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	const path = "/api/v1/task-types/order:process/limits"
	var l limitsBody
	rec := b.do("PUT", path, `{"rate":{"limit":10,"per":"1s","key":"order_id"},"concurrency":{"max":1,"key":"order_id"}}`, nil)
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &l) != nil {
		t.Fatalf("put: %d %s", rec.Code, rec.Body)
	}
	if r := l.Limits.Rate; r == nil || r.Limit != 10 || r.Per != "1s" || r.Burst != 0 || r.Key != "order_id" || l.Limits.Concurrency.Max != 1 {
		t.Fatalf("effective limits: %s", rec.Body)
	}
	// GET shows the same; the catalog too.
	if rec := b.do("GET", path, "", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"max":1,"key":"order_id"`) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("GET", "/api/v1/task-types", "", nil); !strings.Contains(rec.Body.String(), `"limit":10,"per":"1s"`) {
		t.Fatalf("catalog does not show the override: %s", rec.Body)
	}
	// null removes one part and leaves the other.
	rec = b.do("PUT", path, `{"concurrency":null}`, nil)
	l = limitsBody{}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &l) != nil || l.Limits.Concurrency != nil || l.Limits.Rate == nil {
		t.Fatalf("null: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("DELETE", path, "", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"limits":{"rate":null,"concurrency":null}`) {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if rec := b.do("GET", "/api/v1/task-types/no:such/limits", "", nil); rec.Code != http.StatusNotFound {
		t.Fatalf("unknown type: %d", rec.Code)
	}
}

func TestTaskTypeLimitsRejectBadBodies(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	for _, tc := range []struct{ body, field string }{
		{`{"rate":{"limit":10,"per":"1y"}}`, "rate.per"},
		{`{"rate":{"limit":-10,"per":"1s"}}`, "rate.limit"},
		{`{"concurrency":{"max":-1}}`, "concurrency.max"},
		{`{"rate":{"limit":10,"per":"1s","unknown":1}}`, "rate.unknown"},
		{`{"unknown":{}}`, "unknown"},
		{`{"rate":{"limit":10,"per":"1s","key":"merchant_id"}}`, "rate.key"},
		{`{"concurrency":{"max":1,"key":"items"}}`, "concurrency.key"},
	} {
		var e errorBody
		rec := b.do("PUT", "/api/v1/task-types/order:process/limits", tc.body, nil)
		if rec.Code != http.StatusUnprocessableEntity || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Fields[tc.field] == "" {
			t.Errorf("%s: %d %s, want 422 naming %s", tc.body, rec.Code, rec.Body, tc.field)
		}
	}
	for _, body := range []string{`{"rate":`, `"rate"`, `[]`} {
		if rec := b.do("PUT", "/api/v1/task-types/order:process/limits", body, nil); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", body, rec.Code, rec.Body)
		}
	}
}

func TestTaskExpiryFields(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	rec := b.do("POST", "/api/v1/tasks", `{"type":"system:ping","countdown":3600,"expires_in":60}`, nil)
	var created struct{ ID string }
	if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &created) != nil {
		t.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
	}
	var info struct {
		ExpiresAt *time.Time `json:"expires_at"`
		Throttled bool       `json:"throttled"`
	}
	rec = b.do("GET", "/api/v1/tasks/"+created.ID, "", nil)
	if json.Unmarshal(rec.Body.Bytes(), &info) != nil || info.ExpiresAt == nil ||
		info.ExpiresAt.Before(time.Now().Add(50*time.Second)) || info.ExpiresAt.After(time.Now().Add(61*time.Second)) {
		t.Fatalf("task: %s", rec.Body)
	}
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if rec := b.do("POST", "/api/v1/tasks", `{"type":"system:ping","expires_at":"`+at+`"}`, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("expires_at: %d %s", rec.Code, rec.Body)
	}
	for _, tc := range []struct{ body, field string }{
		{`{"type":"system:ping","expires_in":0}`, "expires_in"},
		{`{"type":"system:ping","expires_in":-5}`, "expires_in"},
		{`{"type":"system:ping","expires_at":"tomorrow"}`, "expires_at"},
		{`{"type":"system:ping","expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
		{`{"type":"system:ping","expires_in":5,"expires_at":"` + at + `"}`, "expires_at"},
	} {
		var e errorBody
		rec := b.do("POST", "/api/v1/tasks", tc.body, nil)
		if rec.Code != http.StatusUnprocessableEntity || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Fields[tc.field] == "" {
			t.Errorf("%s: %d %s, want 422 naming %s", tc.body, rec.Code, rec.Body, tc.field)
		}
	}
}

// The batch endpoint takes each item's expires_in / expires_at like
// POST /api/v1/tasks (one parser) and names a bad one by its index.
func TestTaskBatchExpiry(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	rec := b.do("POST", "/api/v1/tasks/batch", `{"tasks":[{"type":"system:ping","countdown":3600,"expires_in":120},
		{"type":"system:ping","countdown":3600,"expires_at":"`+at+`"},{"type":"system:ping","countdown":3600}]}`, nil)
	var got struct {
		Tasks []struct{ ID string } `json:"tasks"`
	}
	if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &got) != nil || len(got.Tasks) != 3 {
		t.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	want := []*time.Time{ptr(time.Now().Add(2 * time.Minute)), ptr(time.Now().Add(time.Hour)), nil}
	for i, task := range got.Tasks {
		var info struct {
			ExpiresAt *time.Time `json:"expires_at"`
		}
		_ = json.Unmarshal(b.do("GET", "/api/v1/tasks/"+task.ID, "", nil).Body.Bytes(), &info)
		switch {
		case want[i] == nil && info.ExpiresAt != nil:
			t.Errorf("item %d: expires at %v, want none", i, info.ExpiresAt)
		case want[i] != nil && (info.ExpiresAt == nil || info.ExpiresAt.Sub(*want[i]).Abs() > 5*time.Second):
			t.Errorf("item %d: expires at %v, want about %v", i, info.ExpiresAt, want[i])
		}
	}
	var e errorBody
	rec = b.do("POST", "/api/v1/tasks/batch", `{"tasks":[{"type":"system:ping"},{"type":"system:ping","expires_in":-1}]}`, nil)
	if rec.Code != http.StatusUnprocessableEntity || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Fields["tasks[1].expires_in"] == "" {
		t.Fatalf("bad expires_in: %d %s, want 422 naming tasks[1].expires_in", rec.Code, rec.Body)
	}
}

func ptr[T any](v T) *T { return &v }

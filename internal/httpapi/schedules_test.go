package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

const scheduleToken = "schedules-token-0123456789"

type scheduleBundle struct {
	srv http.Handler
	rdb *redis.Client
}

// setupSchedules serves the API on a database and Redis DB of its own, with
// one file schedule ("file-nightly") published as a scheduler would.
func setupSchedules(t *testing.T) *scheduleBundle {
	t.Helper()
	d, _ := testenv.DB(t)
	redisURL, rdb := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	file := []*schedule.Entry{{Name: "file-nightly", Spec: "0 0 * * *", TaskType: tasks.TypeMaintenanceCleanup,
		Source: schedule.SourceFile, Enabled: true}}
	if err := schedule.NewState(rdb).PublishFile(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(httpapi.Options{APIToken: scheduleToken, BodyLimit: 1 << 20},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q,
			Schedules: schedule.NewCatalog(d, rdb, q, tasks.All(), queues)})
	return &scheduleBundle{srv: srv, rdb: rdb}
}

func (b *scheduleBundle) do(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+scheduleToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if out != nil && rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec.Code
}

type scheduleView struct {
	Name        string     `json:"name"`
	Source      string     `json:"source"`
	Spec        string     `json:"spec"`
	Timezone    string     `json:"timezone"`
	Enabled     bool       `json:"enabled"`
	NextFireAt  *time.Time `json:"next_fire_at"`
	LastFiredAt *time.Time `json:"last_fired_at"`
	LastTaskID  string     `json:"last_task_id"`
	MaxRetry    *int       `json:"max_retry"`
	Error       string     `json:"error"`
}

func TestScheduleCreateRejectsBadInput(t *testing.T) {
	t.Parallel()
	b := setupSchedules(t)
	if code := b.do(t, "POST", "/api/v1/schedules", `{"name":"taken","spec":"@daily","task_type":"system:ping"}`, nil); code != http.StatusCreated {
		t.Fatalf("setup create: %d", code)
	}
	cases := []struct {
		name, body, field string
	}{
		{"invalid cron spec", `{"name":"a","spec":"61 * * * *","task_type":"system:ping"}`, "spec"},
		{"not cron at all", `{"name":"a","spec":"every day at noon","task_type":"system:ping"}`, "spec"},
		{"unknown timezone", `{"name":"a","spec":"@daily","timezone":"Europe/Atlantis","task_type":"system:ping"}`, "timezone"},
		{"unknown task type", `{"name":"a","spec":"@daily","task_type":"email:spam"}`, "task_type"},
		{"invalid payload", `{"name":"a","spec":"@daily","task_type":"system:ping","payload":{"sleep_ms":-1}}`, "payload.sleep_ms"},
		{"unknown payload field", `{"name":"a","spec":"@daily","task_type":"system:ping","payload":{"x":1}}`, "payload.x"},
		{"payload not an object", `{"name":"a","spec":"@daily","task_type":"system:ping","payload":[1]}`, "payload"},
		{"duplicate name", `{"name":"taken","spec":"@hourly","task_type":"system:ping"}`, "name"},
		{"name of a file schedule", `{"name":"file-nightly","spec":"@hourly","task_type":"system:ping"}`, "name"},
		{"bad name", `{"name":"Has Spaces","spec":"@daily","task_type":"system:ping"}`, "name"},
		{"missing spec", `{"name":"a","task_type":"system:ping"}`, "spec"},
		{"queue not served", `{"name":"a","spec":"@daily","task_type":"system:ping","queue":"nowhere"}`, "queue"},
		{"bad max_retry", `{"name":"a","spec":"@daily","task_type":"system:ping","max_retry":-1}`, "max_retry"},
		{"bad timeout", `{"name":"a","spec":"@daily","task_type":"system:ping","timeout":0}`, "timeout"},
		{"bad catchup_window", `{"name":"a","spec":"@daily","task_type":"system:ping","catchup_window":-5}`, "catchup_window"},
		{"bad expires_in", `{"name":"a","spec":"@daily","task_type":"system:ping","expires_in":0}`, "expires_in"},
		{"unknown field", `{"name":"a","spec":"@daily","task_type":"system:ping","cron":"x"}`, "cron"},
		{"wrong type", `{"name":"a","spec":5,"task_type":"system:ping"}`, "spec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body errorBody
			code := b.do(t, "POST", "/api/v1/schedules", tc.body, &body)
			if code != http.StatusUnprocessableEntity || body.Error.Fields[tc.field] == "" {
				t.Fatalf("status %d, fields %v; want 422 naming %q", code, body.Error.Fields, tc.field)
			}
		})
	}
	// Nothing half-written: only the setup schedule exists.
	var list struct{ Schedules []scheduleView }
	b.do(t, "GET", "/api/v1/schedules", "", &list)
	if len(list.Schedules) != 2 {
		t.Fatalf("schedules after bad requests: %+v", list.Schedules)
	}
}

func TestScheduleLifecycle(t *testing.T) {
	t.Parallel()
	b := setupSchedules(t)

	var created scheduleView
	code := b.do(t, "POST", "/api/v1/schedules",
		`{"name":"ny-morning","spec":"0 9 * * *","timezone":"America/New_York","task_type":"system:ping","payload":{"sleep_ms":1},"max_retry":1}`, &created)
	if code != http.StatusCreated || created.Source != "database" || !created.Enabled || created.NextFireAt == nil {
		t.Fatalf("create: %d %+v", code, created)
	}
	if ny := created.NextFireAt.In(mustZone(t, "America/New_York")); ny.Hour() != 9 || ny.Minute() != 0 {
		t.Errorf("next_fire_at = %s, want 09:00 New York time", ny)
	}

	var list struct {
		Schedules []scheduleView
		Scheduler struct {
			Leader         string     `json:"leader"`
			LeaseExpiresAt *time.Time `json:"lease_expires_at"`
		}
	}
	b.rdb.Set(context.Background(), schedule.LeaderKey, "replica-1/abc", 10*time.Second)
	if code := b.do(t, "GET", "/api/v1/schedules", "", &list); code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	if len(list.Schedules) != 2 || list.Schedules[0].Name != "file-nightly" || list.Schedules[0].Source != "file" ||
		list.Schedules[0].NextFireAt == nil || list.Schedules[1].Name != "ny-morning" {
		t.Fatalf("list = %+v", list.Schedules)
	}
	if list.Scheduler.Leader != "replica-1/abc" || list.Scheduler.LeaseExpiresAt == nil {
		t.Errorf("scheduler = %+v", list.Scheduler)
	}

	var patched scheduleView
	if code := b.do(t, "PATCH", "/api/v1/schedules/ny-morning", `{"enabled":false,"max_retry":null}`, &patched); code != http.StatusOK {
		t.Fatalf("patch: %d", code)
	}
	if patched.Enabled || patched.NextFireAt != nil || patched.MaxRetry != nil || patched.Spec != "0 9 * * *" {
		t.Errorf("after disabling: %+v", patched)
	}
	var bad errorBody
	if code := b.do(t, "PATCH", "/api/v1/schedules/ny-morning", `{"spec":"0 25 * * *"}`, &bad); code != http.StatusUnprocessableEntity || bad.Error.Fields["spec"] == "" {
		t.Errorf("bad patch: %d %+v", code, bad)
	}
	if code := b.do(t, "PATCH", "/api/v1/schedules/ny-morning", `{"spec":""}`, &bad); code != http.StatusUnprocessableEntity {
		t.Errorf("empty spec: %d", code)
	}
	if code := b.do(t, "PATCH", "/api/v1/schedules/ny-morning", `{"name":"other"}`, &bad); code != http.StatusUnprocessableEntity {
		t.Errorf("renaming: %d", code)
	}
	if code := b.do(t, "PATCH", "/api/v1/schedules/ny-morning", `{"enabled":true,"spec":"*/5 * * * *"}`, &patched); code != http.StatusOK ||
		!patched.Enabled || patched.NextFireAt == nil || patched.NextFireAt.Minute()%5 != 0 {
		t.Errorf("re-enable: %d %+v", code, patched)
	}

	// File schedules are read-only.
	if code := b.do(t, "PATCH", "/api/v1/schedules/file-nightly", `{"enabled":false}`, nil); code != http.StatusConflict {
		t.Errorf("patch file schedule: %d", code)
	}
	if code := b.do(t, "DELETE", "/api/v1/schedules/file-nightly", "", nil); code != http.StatusConflict {
		t.Errorf("delete file schedule: %d", code)
	}

	// Fire now: one task with a manual ID, for file and database schedules.
	for _, name := range []string{"ny-morning", "file-nightly"} {
		var fired struct{ ID, Type, Queue string }
		if code := b.do(t, "POST", "/api/v1/schedules/"+name+"/fire", "", &fired); code != http.StatusAccepted ||
			!strings.HasPrefix(fired.ID, "schedule:"+name+":manual:") {
			t.Fatalf("fire %s: %d %+v", name, code, fired)
		}
		key := "asynq:{" + fired.Queue + "}:t:" + fired.ID
		if n, _ := b.rdb.Exists(context.Background(), key).Result(); n != 1 {
			t.Errorf("fired task %s not in Redis", key)
		}
	}

	if code := b.do(t, "DELETE", "/api/v1/schedules/ny-morning", "", nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	for _, req := range [][2]string{{"DELETE", ""}, {"GET", ""}, {"PATCH", `{"enabled":true}`}, {"POST", "fire"}} {
		path := "/api/v1/schedules/ny-morning"
		body := req[1]
		if req[1] == "fire" {
			path, body = path+"/fire", ""
		}
		if code := b.do(t, req[0], path, body, nil); code != http.StatusNotFound {
			t.Errorf("%s %s after delete: %d, want 404", req[0], path, code)
		}
	}
}

func TestSchedulesNeedAdmin(t *testing.T) {
	t.Parallel()
	b := setupSchedules(t)
	req := httptest.NewRequest("GET", "/api/v1/schedules", nil)
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("anonymous list: %d", rec.Code)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// A schedule's expires_in shows in its view, can be patched, and gives its
// fires a deadline.
func TestScheduleExpiresIn(t *testing.T) {
	t.Parallel()
	b := setupSchedules(t)
	var v struct {
		ExpiresIn *int `json:"expires_in"`
	}
	if code := b.do(t, "POST", "/api/v1/schedules", `{"name":"otp","spec":"@hourly","task_type":"system:ping","expires_in":60}`, &v); code != http.StatusCreated || v.ExpiresIn == nil || *v.ExpiresIn != 60 {
		t.Fatalf("create: %d %+v", code, v)
	}
	var fired struct{ ID string }
	if code := b.do(t, "POST", "/api/v1/schedules/otp/fire", "", &fired); code != http.StatusAccepted {
		t.Fatalf("fire: %d", code)
	}
	var task struct {
		ExpiresAt *time.Time `json:"expires_at"`
	}
	b.do(t, "GET", "/api/v1/tasks/"+fired.ID, "", &task)
	if task.ExpiresAt == nil || time.Until(*task.ExpiresAt) > time.Minute || time.Until(*task.ExpiresAt) < 30*time.Second {
		t.Fatalf("fired task expires at %v, want about a minute from now", task.ExpiresAt)
	}
	v.ExpiresIn = nil
	if code := b.do(t, "PATCH", "/api/v1/schedules/otp", `{"expires_in":null}`, &v); code != http.StatusOK || v.ExpiresIn != nil {
		t.Fatalf("patch to null: %d %+v", code, v)
	}
}

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

type taskView struct {
	ID            string         `json:"id"`
	Type          string         `json:"type"`
	Queue         string         `json:"queue"`
	State         string         `json:"state"`
	Retried       int            `json:"retried"`
	MaxRetry      int            `json:"max_retry"`
	LastError     string         `json:"last_error"`
	NextProcessAt *time.Time     `json:"next_process_at"`
	CompletedAt   *time.Time     `json:"completed_at"`
	Result        map[string]any `json:"result"`
}

func enqueue(t *testing.T, p *testenv.Platform, body string) taskView {
	t.Helper()
	var v taskView
	status, raw := p.Do(http.MethodPost, "/api/v1/tasks", body, &v)
	if status != http.StatusAccepted {
		t.Fatalf("enqueue %s: status %d: %s", body, status, raw)
	}
	return v
}

func getTask(t *testing.T, p *testenv.Platform, id string) taskView {
	t.Helper()
	var v taskView
	status, raw := p.Do(http.MethodGet, "/api/v1/tasks/"+id, nil, &v)
	if status != http.StatusOK {
		t.Fatalf("get task %s: status %d: %s", id, status, raw)
	}
	return v
}

func waitState(t *testing.T, p *testenv.Platform, id, state string, timeout time.Duration) taskView {
	t.Helper()
	var v taskView
	testenv.Eventually(t, timeout, func() bool {
		v = getTask(t, p, id)
		return v.State == state
	}, "task %s never reached %s (last: %+v)", id, state, &v)
	return v
}

func TestPingCompletes(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{}}`)
	if task.Type != "system:ping" || task.Queue != "default" || task.State != "pending" {
		t.Fatalf("enqueue answer = %+v", task)
	}
	done := waitState(t, p, task.ID, "completed", 30*time.Second)
	if done.Result["pong"] != true || done.CompletedAt == nil {
		t.Fatalf("completed task = %+v", done)
	}
}

func TestOrderProcessCompletesOrder(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	db := openDB(t, p.DBURL)
	ctx := context.Background()
	u := store.User{Email: "buyer@example.com", Name: "Buyer"}
	if err := store.NewUsers(db).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, err := store.NewOrders(db).Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: "book", Quantity: 2, UnitPriceCents: 1250}})
	if err != nil {
		t.Fatal(err)
	}

	task := enqueue(t, p, fmt.Sprintf(`{"type":"order:process","payload":{"order_id":%d}}`, o.ID))
	waitState(t, p, task.ID, "completed", 30*time.Second)
	got, err := store.NewOrders(db).Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.OrderCompleted || got.ProcessedAt == nil {
		t.Fatalf("order after processing = %+v", got)
	}

	// Running it again is a no-op: the order stays completed.
	again := enqueue(t, p, fmt.Sprintf(`{"type":"order:process","payload":{"order_id":%d}}`, o.ID))
	v := waitState(t, p, again.ID, "completed", 30*time.Second)
	if v.Result["already_done"] != true {
		t.Fatalf("second run result = %v", v.Result)
	}
}

func TestFailingTaskRetriesWithBackoffThenArchives(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{Env: []string{"RETRY_BASE=1s", "RETRY_MAX=8s"}})
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"fail":"boom on purpose"},"max_retry":3}`)

	// Watch the retry states: each delay must stay under its backoff ceiling
	// (base·2ⁿ, capped), and the ceilings grow.
	seen := map[int]bool{}
	var final taskView
	testenv.Eventually(t, 90*time.Second, func() bool {
		v := getTask(t, p, task.ID)
		if v.State == "retry" && !seen[v.Retried] && v.NextProcessAt != nil {
			seen[v.Retried] = true
			delay := time.Until(*v.NextProcessAt)
			ceiling := time.Second << (v.Retried - 1) // retry n (1-based) waits up to base·2ⁿ⁻¹
			if delay > ceiling+time.Second {
				t.Errorf("retry %d scheduled %s ahead, above its ceiling %s", v.Retried, delay, ceiling)
			}
		}
		final = v
		return v.State == "archived"
	}, "task never archived (last %+v)", &final)
	if final.Retried != 3 || final.MaxRetry != 3 {
		t.Errorf("archived with retried=%d max_retry=%d, want 3 and 3", final.Retried, final.MaxRetry)
	}
	if !strings.Contains(final.LastError, "boom on purpose") {
		t.Errorf("last_error = %q", final.LastError)
	}
	if len(seen) == 0 {
		t.Error("never saw the task in the retry state")
	}

	// An archived task can be run again on request.
	var ran taskView
	if status, raw := p.Do(http.MethodPost, "/api/v1/tasks/"+task.ID+"/run", nil, &ran); status != http.StatusOK || ran.State != "pending" && ran.State != "active" {
		t.Fatalf("run archived task: %d %s", status, raw)
	}
}

func TestAPIRejectsBadTasks(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	cases := []struct {
		name, body string
		status     int
		field      string
	}{
		{"malformed JSON", `{"type":`, http.StatusBadRequest, ""},
		{"missing type", `{"payload":{}}`, http.StatusUnprocessableEntity, "type"},
		{"unknown type", `{"type":"nope:nothing","payload":{}}`, http.StatusUnprocessableEntity, "type"},
		{"wrong payload type", `{"type":"email:welcome","payload":{"user_id":"abc"}}`, http.StatusUnprocessableEntity, "payload.user_id"},
		{"invalid payload", `{"type":"email:welcome","payload":{"user_id":0}}`, http.StatusUnprocessableEntity, "payload.user_id"},
		{"unknown payload field", `{"type":"email:welcome","payload":{"user_id":1,"extra":true}}`, http.StatusUnprocessableEntity, "payload.extra"},
		{"unknown top-level field", `{"type":"system:ping","color":"red"}`, http.StatusUnprocessableEntity, "color"},
		{"bad queue", `{"type":"system:ping","queue":"nowhere"}`, http.StatusUnprocessableEntity, "queue"},
		{"bad eta", `{"type":"system:ping","eta":"tomorrow"}`, http.StatusUnprocessableEntity, "eta"},
		{"negative countdown", `{"type":"system:ping","countdown":-5}`, http.StatusUnprocessableEntity, "countdown"},
		{"bad max_retry type", `{"type":"system:ping","max_retry":"three"}`, http.StatusUnprocessableEntity, "max_retry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Error struct {
					Code   string            `json:"code"`
					Fields map[string]string `json:"fields"`
				} `json:"error"`
			}
			status, raw := p.Do(http.MethodPost, "/api/v1/tasks", tc.body, &body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, raw)
			}
			if tc.field != "" && body.Error.Fields[tc.field] == "" {
				t.Fatalf("error does not name field %q: %s", tc.field, raw)
			}
		})
	}

	// Nothing was enqueued by any of them.
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	p.Do(http.MethodGet, "/api/v1/queues", nil, &queues)
	for _, q := range queues.Queues {
		if q.Size != 0 {
			t.Errorf("queue %s has %d tasks after rejected requests", q.Queue, q.Size)
		}
	}

	// Duplicate task_id → 409; unknown id → 404; no token → 401.
	enqueue(t, p, `{"type":"system:ping","retention":3600,"task_id":"only-once"}`)
	if status, raw := p.Do(http.MethodPost, "/api/v1/tasks", `{"type":"system:ping","task_id":"only-once"}`, nil); status != http.StatusConflict {
		t.Errorf("duplicate task_id: %d %s", status, raw)
	}
	if status, _ := p.Do(http.MethodGet, "/api/v1/tasks/does-not-exist", nil, nil); status != http.StatusNotFound {
		t.Errorf("unknown task: status %d", status)
	}
	if status, _ := testenv.DoJSON(t, http.MethodGet, p.APIURL+"/api/v1/queues", "Bearer wrong-token-wrong-token", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("bad token: status %d", status)
	}
}

func TestWorkerFinishesSlowTaskOnSIGTERM(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	worker, _ := p.StartWorker()
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":3000}}`)
	waitState(t, p, task.ID, "active", 30*time.Second)

	start := time.Now()
	if err := worker.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not exit cleanly: %v\n%s", err, worker.Output())
	}
	v := getTask(t, p, task.ID)
	if v.State != "completed" {
		t.Fatalf("after graceful shutdown the slow task is %s, want completed (worker stopped after %s)", v.State, time.Since(start))
	}
	if !strings.Contains(worker.Output(), "worker stopped") {
		t.Errorf("worker did not log a clean stop:\n%s", worker.Output())
	}
}

func TestWorkerRequeuesUnfinishedTaskAfterShutdownTimeout(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true, Env: []string{"SHUTDOWN_TIMEOUT=1s"}})
	worker, _ := p.StartWorker()
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":60000}}`)
	waitState(t, p, task.ID, "active", 30*time.Second)
	if err := worker.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not exit: %v", err)
	}
	v := getTask(t, p, task.ID)
	if v.State != "pending" {
		t.Fatalf("unfinished task after shutdown is %s, want pending (back in the queue)", v.State)
	}
}

func TestSchedulerFiresEachTickOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "schedules.yaml")
	if err := os.WriteFile(file, []byte(`schedules:
  - name: every-second
    spec: "@every 1s"
    task: system:ping
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true, Env: []string{"SCHEDULES_FILE=" + file}})
	sched, _ := p.StartScheduler()
	time.Sleep(5 * time.Second)
	if err := sched.Stop(20 * time.Second); err != nil {
		t.Fatalf("scheduler stop: %v", err)
	}

	// Every fire is a pending task whose ID names its tick.
	_, rdb := redisFor(t, p.RedisURL)
	ids, err := rdb.LRange(context.Background(), "asynq:{default}:pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	lo, hi, n := requireEachTickOnce(t, ids, "every-second", sched.Output())
	t.Logf("ticks fired: %d, duplicates: %d, gaps: %d", n, len(ids)-n, int(hi-lo+1)-n)
}

// requireEachTickOnce parses the schedule task IDs "schedule:<name>:<tick>"
// in ids, fails unless at least 3 ticks fired, each exactly once and with no
// gap between the first and the last, and returns the first and last tick
// and the number of distinct ticks. output is shown when too few fired.
func requireEachTickOnce(t *testing.T, ids []string, name, output string) (lo, hi int64, n int) {
	t.Helper()
	ticks := map[int64]int{}
	for _, id := range ids {
		var tick int64
		if _, err := fmt.Sscanf(id, "schedule:"+name+":%d", &tick); err != nil {
			t.Fatalf("unexpected task id %q", id)
		}
		ticks[tick]++
		if lo == 0 || tick < lo {
			lo = tick
		}
		hi = max(hi, tick)
	}
	if len(ticks) < 3 {
		t.Fatalf("only %d ticks fired in 5s: %v\n%s", len(ticks), ids, output)
	}
	for tick, c := range ticks {
		if c != 1 {
			t.Errorf("tick %d enqueued %d times", tick, c)
		}
	}
	if gaps := int(hi-lo+1) - len(ticks); gaps != 0 {
		t.Errorf("%d missing ticks between %d and %d", gaps, lo, hi)
	}
	return lo, hi, len(ticks)
}

func openDB(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestCancelActiveTask(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	task := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":60000}}`)
	waitState(t, p, task.ID, "active", 30*time.Second)

	var res struct{ ID, Result string }
	status, raw := p.Do(http.MethodDelete, "/api/v1/tasks/"+task.ID, nil, &res)
	if status != http.StatusOK || res.Result != "canceled" {
		t.Fatalf("cancel: %d %s", status, raw)
	}
	// Canceled means gone: not retried, not archived.
	time.Sleep(2 * time.Second)
	if status, raw := p.Do(http.MethodGet, "/api/v1/tasks/"+task.ID, nil, nil); status != http.StatusNotFound {
		t.Fatalf("after cancel: %d %s", status, raw)
	}
}

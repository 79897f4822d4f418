package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// metricsOf scrapes a /metrics endpoint.
func metricsOf(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// metricValue sums the series of name whose labels include want (counter,
// gauge, or a histogram's sample count); ok is false if none matches.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (sum float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, ok
}

// TestMetricsMoveAfterTasks runs tasks through a real api and worker, then
// scrapes both: the worker's task counters and the api's request and queue
// metrics must reflect exactly what ran.
func TestMetricsMoveAfterTasks(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	_, workerURL := p.StartWorker()

	ok1 := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{}}`)
	ok2 := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{}}`)
	bad := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"fail":"drill"},"max_retry":0}`)
	waitState(t, p, ok1.ID, "completed", 30*time.Second)
	waitState(t, p, ok2.ID, "completed", 30*time.Second)
	waitState(t, p, bad.ID, "archived", 30*time.Second)

	ping := map[string]string{"type": "system:ping", "queue": "default"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range ping {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	// The worker records an attempt just after the task's state changes in
	// Redis, so poll briefly until the last one is counted.
	var w map[string]*dto.MetricFamily
	testenv.Eventually(t, 10*time.Second, func() bool {
		w = metricsOf(t, workerURL+"/metrics")
		n, _ := metricValue(w, "conveyor_tasks_finished_total", ping)
		return n == 3
	}, "the worker did not count 3 finished attempts")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"conveyor_tasks_started_total", ping, 3},
		{"conveyor_tasks_finished_total", with(map[string]string{"outcome": "succeeded"}), 2},
		{"conveyor_tasks_finished_total", with(map[string]string{"outcome": "archived"}), 1},
		{"conveyor_tasks_failed_total", ping, 1},
		{"conveyor_task_duration_seconds", map[string]string{"type": "system:ping"}, 3},
		{"conveyor_tasks_in_flight", map[string]string{"type": "system:ping"}, 0},
	} {
		if got, _ := metricValue(w, c.name, c.labels); got != c.want {
			t.Errorf("worker %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := metricValue(w, "asynq_queue_size", nil); ok {
		t.Error("the worker exports queue sizes; only the api should")
	}

	a := metricsOf(t, p.APIURL+"/metrics")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"conveyor_http_requests_total", map[string]string{"route": "/api/v1/tasks", "method": "POST", "status": "202"}, 3},
		{"conveyor_http_request_duration_seconds", map[string]string{"route": "/api/v1/tasks", "method": "POST", "status": "202"}, 3},
		{"asynq_tasks_enqueued_total", map[string]string{"queue": "default", "state": "archived"}, 1},
		{"asynq_tasks_enqueued_total", map[string]string{"queue": "default", "state": "completed"}, 2},
		{"asynq_tasks_processed_total", map[string]string{"queue": "default"}, 3},
		{"asynq_tasks_failed_total", map[string]string{"queue": "default"}, 1},
		{"asynq_queue_size", map[string]string{"queue": "default"}, 3}, // asynq counts kept completed tasks too
		{"conveyor_outbox_pending", nil, 0},
		{"conveyor_queue_stats_up", nil, 1},
	} {
		got, ok := metricValue(a, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("api %s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if got, _ := metricValue(a, "conveyor_http_requests_total", map[string]string{"route": "/api/v1/tasks/:id", "method": "GET", "status": "200"}); got < 3 {
		t.Errorf("api GET /api/v1/tasks/:id 200 = %v, want at least 3", got)
	}
}

// TestRequestIDReachesWorkerLogs: the X-Request-ID of the API call that
// enqueued a task appears on the worker's log lines for that task.
func TestRequestIDReachesWorkerLogs(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	worker, _ := p.StartWorker()

	const rid = "ops-e2e-request-7f3a"
	req, _ := http.NewRequest(http.MethodPost, p.APIURL+"/api/v1/tasks", strings.NewReader(`{"type":"system:ping","retention":3600,"payload":{}}`))
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", rid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Request-ID") != rid {
		t.Fatalf("enqueue: %d, X-Request-ID %q: %s", resp.StatusCode, resp.Header.Get("X-Request-ID"), body)
	}
	var task taskView
	if err := json.Unmarshal(body, &task); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, task.ID, "completed", 30*time.Second)

	// LOG_FORMAT=json: find the worker's line for this task.
	var line map[string]any
	testenv.Eventually(t, 10*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(worker.Output()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["task_id"] == task.ID && l["msg"] == "task succeeded" {
				line = l
				return true
			}
		}
		return false
	}, "no 'task succeeded' JSON log line for task %s", task.ID)
	if line["request_id"] != rid || line["task_type"] != "system:ping" || line["queue"] != "default" {
		t.Errorf("worker log line %v: want request_id %q, task_type system:ping, queue default", line, rid)
	}
}

// TestProgressResultAndWait: maintenance:cleanup reports progress per table
// and its deleted counts; ?wait= returns once it has finished.
func TestProgressResultAndWait(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	task := enqueue(t, p, `{"type":"maintenance:cleanup","payload":{}}`)

	var got struct {
		State    string `json:"state"`
		Progress *struct {
			Done    int64  `json:"done"`
			Total   int64  `json:"total"`
			Message string `json:"message"`
		} `json:"progress"`
		Result struct {
			Deleted map[string]int64 `json:"deleted"`
		} `json:"result"`
	}
	// One long poll, repeated only if the wait runs out on a slow machine.
	testenv.Eventually(t, 90*time.Second, func() bool {
		status, raw := p.Do(http.MethodGet, "/api/v1/tasks/"+task.ID+"?wait=30s", nil, &got)
		if status != http.StatusOK {
			t.Fatalf("GET ?wait=30s: %d %s", status, raw)
		}
		return got.State == "completed"
	}, "cleanup never completed (last state %q)", got.State)

	if got.Progress == nil || got.Progress.Done != got.Progress.Total || got.Progress.Total < 2 || got.Progress.Message != "done" {
		t.Errorf("progress = %+v, want done == total (one step per table) and message done", got.Progress)
	}
	for _, table := range []string{"orders", "email_log"} {
		if _, ok := got.Result.Deleted[table]; !ok {
			t.Errorf("result.deleted %v has no count for %s", got.Result.Deleted, table)
		}
	}
	if int64(len(got.Result.Deleted)) != got.Progress.Total {
		t.Errorf("%d tables deleted from, progress total %d", len(got.Result.Deleted), got.Progress.Total)
	}
}

// TestTaskRetention: a completed system:ping leaves nothing in Redis (its
// type keeps nothing) and GET says why it is gone; a caller that asks for a
// retention gets it.
func TestTaskRetention(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	kept := enqueue(t, p, `{"type":"system:ping","retention":172800,"payload":{}}`)
	gone := enqueue(t, p, `{"type":"system:ping","payload":{}}`)
	waitState(t, p, kept.ID, "completed", 30*time.Second)

	opt, err := redis.ParseURL(p.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	// asynq scores a completed task, in its queue's completed set, with the
	// Unix time at which its retention ends.
	expires, err := rdb.ZScore(ctx, "asynq:{default}:completed", kept.ID).Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.Unix(int64(expires), 0)); left < 47*time.Hour || left > 48*time.Hour {
		t.Errorf("completed task kept for %s more, want about 48h (its retention)", left)
	}

	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		status, _ := p.Do(http.MethodGet, "/api/v1/tasks/"+gone.ID, nil, &e)
		return status == http.StatusNotFound
	}, "the plain ping never left Redis")
	if e.Error.Code != "not_found" || !strings.Contains(e.Error.Message, "system:ping nothing kept") {
		t.Errorf("GET of the finished ping: %+v, want not_found naming system:ping's retention", e.Error)
	}
	if n, err := rdb.Exists(ctx, "asynq:{default}:t:"+gone.ID).Result(); err != nil || n != 0 {
		t.Errorf("the finished ping's task hash exists (%d, %v)", n, err)
	}
}

package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// scrape parses a /metrics answer.
func scrape(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// sample returns the value of the series of family name whose labels
// include want, and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
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
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsCountRequestsByRouteAndStatus(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	redisURL, _ := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	if _, err := q.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing, Payload: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(observe.NewQueueCollector(q.QueueSnapshots, nil, testenv.Logger(t)))
	srv := httpapi.NewServer(httpapi.Options{APIToken: token, BodyLimit: 1 << 20},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q, Metrics: reg})

	get := func(path string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code
	}
	get("/healthz")
	get("/healthz")
	get("/api/v1/tasks/no-such-task")
	get("/wp-admin/install.php")

	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	fams := scrape(t, rec.Body.String())

	for _, c := range []struct {
		route, status string
		want          float64
	}{
		{"/healthz", "200", 2},
		{"/api/v1/tasks/:id", "404", 1},
		{"unmatched", "404", 1},
	} {
		labels := map[string]string{"route": c.route, "method": "GET", "status": c.status}
		if got, _ := sample(fams, "conveyor_http_requests_total", labels); got != c.want {
			t.Errorf("requests %v = %v, want %v", labels, got, c.want)
		}
		if got, _ := sample(fams, "conveyor_http_request_duration_seconds", labels); got != c.want {
			t.Errorf("latency observations %v = %v, want %v", labels, got, c.want)
		}
	}
	if _, ok := sample(fams, "conveyor_http_requests_total", map[string]string{"route": "/wp-admin/install.php"}); ok {
		t.Error("a raw unmatched path became a route label")
	}
	if got, _ := sample(fams, "asynq_tasks_enqueued_total", map[string]string{"queue": "default", "state": "pending"}); got != 1 {
		t.Errorf("pending in default = %v, want 1", got)
	}
	if got, _ := sample(fams, "asynq_queue_size", map[string]string{"queue": "default"}); got != 1 {
		t.Errorf("size of default = %v, want 1", got)
	}
}

func TestTaskGetWaitValidation(t *testing.T) {
	t.Parallel()
	b := setupOps(t, false)
	id := b.enqueuePing(t)
	for _, c := range []struct {
		wait   string
		status int
	}{
		{"", http.StatusOK},
		{"0s", http.StatusOK},
		{"2h", http.StatusUnprocessableEntity},
		{"-1s", http.StatusUnprocessableEntity},
		{"soon", http.StatusUnprocessableEntity},
		{"61", http.StatusUnprocessableEntity},
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+id+"?wait="+c.wait, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		if rec.Code != c.status {
			t.Errorf("wait=%q: %d, want %d: %s", c.wait, rec.Code, c.status, rec.Body)
		}
		if c.status == http.StatusUnprocessableEntity && !strings.Contains(rec.Body.String(), `"wait"`) {
			t.Errorf("wait=%q: the error does not name the wait parameter: %s", c.wait, rec.Body)
		}
	}
}

func TestTaskGetWaitEndsWithTheCurrentState(t *testing.T) {
	t.Parallel()
	b := setupOps(t, false)
	// No worker runs: the task stays pending, so the wait runs out and the
	// answer is the task as it is.
	id := b.enqueuePing(t)
	req := httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+id+"?wait=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	var got struct {
		State    string          `json:"state"`
		Progress json.RawMessage `json:"progress"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %v: %s", rec.Code, err, rec.Body)
	}
	if got.State != "pending" || string(got.Progress) != "null" {
		t.Errorf("state %q progress %s, want pending and null", got.State, got.Progress)
	}
}

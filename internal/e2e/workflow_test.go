package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Workflows through the real binaries: chains pass results along, a chord's
// callback gets its group's results and runs once — also when the worker
// running the group's last step is killed — failures cancel or run their
// dependents as asked, DELETE cancels mid-flight, invalid DAGs are 422, and
// two api replicas start workflows concurrently.

type workflowView struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	State      string         `json:"state"`
	FinishedAt *time.Time     `json:"finished_at"`
	Steps      []workflowStep `json:"steps"`
}

type workflowStep struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	State  string          `json:"state"`
	TaskID string          `json:"task_id"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// step returns the step named id.
func (v workflowView) step(t *testing.T, id string) workflowStep {
	t.Helper()
	for _, s := range v.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("workflow %s has no step %q", v.ID, id)
	return workflowStep{}
}

// pingResult is system:ping's result in a workflow.
type pingResult struct {
	Pong    bool  `json:"pong"`
	Value   int64 `json:"value"`
	Parents int   `json:"parents"`
}

func (v workflowView) result(t *testing.T, id string) pingResult {
	t.Helper()
	var r pingResult
	s := v.step(t, id)
	if err := json.Unmarshal(s.Result, &r); err != nil || !r.Pong {
		t.Fatalf("step %s result %s: %v", id, s.Result, err)
	}
	return r
}

func startWorkflow(t *testing.T, p *testenv.Platform, body any) workflowView {
	t.Helper()
	var v workflowView
	status, raw := p.Do(http.MethodPost, "/api/v1/workflows", body, &v)
	if status != http.StatusAccepted || v.State != "running" {
		t.Fatalf("start workflow: %d %s", status, raw)
	}
	return v
}

// waitWorkflow long-polls until workflow id has ended.
func waitWorkflow(t *testing.T, p *testenv.Platform, id string, timeout time.Duration) workflowView {
	t.Helper()
	var v workflowView
	testenv.Eventually(t, timeout, func() bool {
		status, raw := p.Do(http.MethodGet, "/api/v1/workflows/"+id+"?wait=10s", nil, &v)
		if status != http.StatusOK {
			t.Fatalf("get workflow %s: %d %s", id, status, raw)
		}
		return v.State != "running"
	}, "workflow %s never ended (last: %+v)", id, &v)
	return v
}

func ping(id string, payload map[string]any, after ...string) map[string]any {
	if payload == nil {
		payload = map[string]any{}
	}
	s := map[string]any{"id": id, "type": "system:ping", "payload": payload}
	if len(after) > 0 {
		s["after"] = after
	}
	return s
}

// chord is a group of n pings (each adding 1) and a callback after all.
func chord(n int, member func(i int) map[string]any) map[string]any {
	steps := make([]map[string]any, 0, n+1)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("g%02d", i)
		s := ping(ids[i], map[string]any{"add": 1})
		if member != nil {
			s = member(i)
			s["id"] = ids[i]
		}
		steps = append(steps, s)
	}
	steps = append(steps, ping("callback", nil, ids...))
	return map[string]any{"name": fmt.Sprintf("chord of %d", n), "steps": steps}
}

func TestWorkflowChainChordFailureAndValidation(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	_, workerURL := p.StartWorker()

	// Chain of 3: each adds 1 to its parent's value.
	chain := startWorkflow(t, p, map[string]any{"name": "chain", "steps": []map[string]any{
		ping("a", map[string]any{"add": 1}), ping("b", map[string]any{"add": 1}, "a"), ping("c", map[string]any{"add": 1}, "b"),
	}})
	// Group of 50 with a chord callback.
	group := startWorkflow(t, p, chord(50, nil))
	// A failure: its cancel dependents (and theirs) are cancelled, its run
	// dependent runs.
	fail := startWorkflow(t, p, map[string]any{"steps": []map[string]any{
		{"id": "bad", "type": "system:ping", "payload": map[string]any{"fail": "boom"}, "max_retry": 0},
		ping("skipped", nil, "bad"),
		ping("skipped-too", nil, "skipped"),
		{"id": "cleanup", "type": "system:ping", "payload": map[string]any{"add": 5}, "after": []string{"bad"}, "if_parent_failed": "run"},
	}})

	v := waitWorkflow(t, p, chain.ID, 60*time.Second)
	if v.State != "succeeded" || v.FinishedAt == nil {
		t.Fatalf("chain: %+v", v)
	}
	if r := v.result(t, "c"); r.Value != 3 || r.Parents != 1 {
		t.Fatalf("chain's last step = %+v, want value 3 passed along a → b → c", r)
	}

	v = waitWorkflow(t, p, group.ID, 60*time.Second)
	if r := v.result(t, "callback"); v.State != "succeeded" || r.Parents != 50 || r.Value != 50 {
		t.Fatalf("chord: %s, callback %+v; want 50 results", v.State, r)
	}
	cb := getTask(t, p, v.step(t, "callback").TaskID)
	if cb.State != "completed" || cb.Retried != 0 {
		t.Fatalf("callback task = %+v", cb)
	}

	v = waitWorkflow(t, p, fail.ID, 60*time.Second)
	want := map[string]string{"bad": "failed", "skipped": "cancelled", "skipped-too": "cancelled", "cleanup": "succeeded"}
	for id, st := range want {
		if got := v.step(t, id); got.State != st {
			t.Errorf("step %s = %s (%s), want %s", id, got.State, got.Error, st)
		}
	}
	if v.State != "failed" || v.step(t, "bad").Error == "" || v.result(t, "cleanup").Value != 5 {
		t.Fatalf("failed workflow: %+v", v)
	}
	if id := v.step(t, "skipped").TaskID; id != "" {
		if status, _ := p.Do(http.MethodGet, "/api/v1/tasks/"+id, nil, nil); status != http.StatusNotFound {
			t.Errorf("cancelled step's task exists: %d", status)
		}
	}

	// Invalid DAGs are refused before anything is stored.
	for name, tc := range map[string]struct {
		steps []map[string]any
		field string
	}{
		"cycle":          {[]map[string]any{ping("a", nil, "c"), ping("b", nil, "a"), ping("c", nil, "b")}, "steps[0].after"},
		"unknown parent": {[]map[string]any{ping("a", nil), ping("b", nil, "ghost")}, "steps[1].after"},
		"duplicate id":   {[]map[string]any{ping("a", nil), ping("a", nil)}, "steps[1].id"},
	} {
		var e struct {
			Error struct {
				Fields map[string]string `json:"fields"`
			} `json:"error"`
		}
		status, raw := p.Do(http.MethodPost, "/api/v1/workflows", map[string]any{"steps": tc.steps}, nil)
		_ = json.Unmarshal(raw, &e)
		if status != http.StatusUnprocessableEntity || e.Error.Fields[tc.field] == "" {
			t.Errorf("%s: %d %s; want 422 naming %s", name, status, raw, tc.field)
		}
	}
	var list struct {
		Total int `json:"total"`
	}
	if status, raw := p.Do(http.MethodGet, "/api/v1/workflows", nil, &list); status != http.StatusOK || list.Total != 3 {
		t.Fatalf("workflows stored: %d %s, want the 3 valid ones", status, raw)
	}

	// Metrics: 3 started (api); 2 succeeded and 1 failed, and 4 advances
	// that released children (a→b, b→c, the chord's last member →
	// callback, bad → cleanup) on the worker.
	if got, ok := metricValue(metricsOf(t, p.APIURL+"/metrics"), "conveyor_workflows_started_total", nil); !ok || got != 3 {
		t.Errorf("api conveyor_workflows_started_total = %v (present %v), want 3", got, ok)
	}
	// (Counted just after each commit: wait for the last one.)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"conveyor_workflows_finished_total", map[string]string{"state": "succeeded"}, 2},
		{"conveyor_workflows_finished_total", map[string]string{"state": "failed"}, 1},
		{"conveyor_workflow_step_advance_seconds", nil, 4},
		{"conveyor_workflows_stuck", nil, 0},
	}
	var wrong string
	testenv.Eventually(t, 10*time.Second, func() bool {
		w := metricsOf(t, workerURL+"/metrics")
		wrong = ""
		for _, c := range checks {
			if got, ok := metricValue(w, c.name, c.labels); !ok || got != c.want {
				wrong += fmt.Sprintf(" %s%v = %v (present %v), want %v;", c.name, c.labels, got, ok, c.want)
			}
		}
		return wrong == ""
	}, "worker metrics:%s", lastValue{&wrong})
	t.Logf("chain of 3 → value %d; chord of 50 → callback got %d results once; failure → %v", 3, 50, want)
}

func TestWorkflowCancelMidFlight(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	v := startWorkflow(t, p, map[string]any{"steps": []map[string]any{
		ping("slow", map[string]any{"sleep_ms": 60_000}),
		ping("next", nil, "slow"),
		ping("last", nil, "next"),
	}})
	slow := v.step(t, "slow").TaskID
	testenv.Eventually(t, 30*time.Second, func() bool {
		var task taskView
		status, _ := p.Do(http.MethodGet, "/api/v1/tasks/"+slow, nil, &task) // 404 until relayed
		return status == http.StatusOK && task.State == "active"
	}, "the first step's task never ran")

	status, raw := p.Do(http.MethodDelete, "/api/v1/workflows/"+v.ID, nil, &v)
	if status != http.StatusOK || v.State != "cancelled" {
		t.Fatalf("cancel: %d %s", status, raw)
	}
	for _, s := range v.Steps {
		if s.State != "cancelled" {
			t.Errorf("step %s = %s after cancel", s.ID, s.State)
		}
	}
	// The running task was cancelled through asynq and removed; the next
	// steps never reach the queue.
	testenv.Eventually(t, 30*time.Second, func() bool {
		status, _ := p.Do(http.MethodGet, "/api/v1/tasks/"+slow, nil, nil)
		return status == http.StatusNotFound
	}, "the cancelled step's task is still in the queue")
	// Final states never change (an outcome is recorded only for an
	// enqueued step), so this holds for good.
	var after workflowView
	if status, raw := p.Do(http.MethodGet, "/api/v1/workflows/"+v.ID, nil, &after); status != http.StatusOK || after.State != "cancelled" {
		t.Fatalf("after cancel: %d %s", status, raw)
	}
	for _, id := range []string{"next", "last"} {
		if status, _ := p.Do(http.MethodGet, "/api/v1/tasks/"+after.step(t, id).TaskID, nil, nil); status != http.StatusNotFound {
			t.Errorf("step %s of a cancelled workflow was enqueued", id)
		}
	}
}

// TestChordCallbackOnceAfterWorkerSIGKILL kills the worker (SIGKILL) while
// it runs the last unfinished step of a chord's group. The task is recovered
// and run again on a new worker; the callback then runs exactly once.
func TestChordCallbackOnceAfterWorkerSIGKILL(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	worker, _ := p.StartWorker()
	const n = 20
	v := startWorkflow(t, p, chord(n, func(i int) map[string]any {
		if i == n-1 { // the last one: long enough to be killed inside
			return ping("", map[string]any{"add": 1, "sleep_ms": 8000})
		}
		return ping("", map[string]any{"add": 1})
	}))
	last := v.step(t, fmt.Sprintf("g%02d", n-1)).TaskID
	testenv.Eventually(t, 30*time.Second, func() bool {
		var cur workflowView
		p.Do(http.MethodGet, "/api/v1/workflows/"+v.ID, nil, &cur)
		done := 0
		for _, s := range cur.Steps {
			if s.State == "succeeded" {
				done++
			}
		}
		return done == n-1 && getTask(t, p, last).State == "active"
	}, "the chord never had only its slow step left, running")
	worker.Kill()
	killed := time.Now()

	p.StartWorker()
	v = waitWorkflow(t, p, v.ID, 240*time.Second)
	r := v.result(t, "callback")
	if v.State != "succeeded" || r.Parents != n || r.Value != n {
		t.Fatalf("after SIGKILL: %s, callback %+v", v.State, r)
	}
	lastTask := getTask(t, p, last)
	if lastTask.Retried < 1 {
		t.Errorf("the killed step's task completed with retried=%d: it was not run again", lastTask.Retried)
	}
	cb := getTask(t, p, v.step(t, "callback").TaskID)
	db := openDB(t, p.DBURL)
	var rows int
	if err := db.GetContext(context.Background(), &rows,
		`SELECT count(*) FROM outbox WHERE options->'headers'->>'workflow_step' = $1`, v.ID+":callback"); err != nil {
		t.Fatal(err)
	}
	if cb.State != "completed" || cb.Retried != 0 || rows != 1 {
		t.Fatalf("callback: task %+v, %d outbox rows; want one task, run once", cb, rows)
	}
	t.Logf("chord of %d: worker SIGKILLed inside the last step; recovered and finished %s later; callback enqueued once, ran once with %d results",
		n, time.Since(killed).Round(time.Second), r.Parents)
}

// TestWorkflowsFromTwoAPIReplicas starts chords concurrently through two
// api processes (with idempotent retries): every one succeeds, every
// callback runs once.
func TestWorkflowsFromTwoAPIReplicas(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{})
	addr2 := testenv.FreeAddr(t)
	api2 := testenv.Start(t, "api-2", p.Bins.API, append(append([]string{}, p.Env...), "HTTP_ADDR="+addr2))
	testenv.WaitHTTP(t, "http://"+addr2+"/healthz", 30*time.Second, api2)
	urls := []string{p.APIURL, "http://" + addr2}

	const n, size = 20, 5
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("wf-%d", i)
			for attempt := range 2 { // a retry with the same key, on the other replica
				var v workflowView
				status, hdr, raw := call(t, http.MethodPost, urls[(i+attempt)%2]+"/api/v1/workflows", p.Token,
					chord(size, nil), &v, "Idempotency-Key", key)
				switch {
				case status != http.StatusAccepted:
					t.Errorf("workflow %d attempt %d: %d %s", i, attempt, status, raw)
					return
				case attempt == 0:
					ids[i] = v.ID
				case v.ID != ids[i] || hdr.Get("Idempotent-Replayed") != "true":
					t.Errorf("workflow %d: retry started %s (replayed %q), first %s", i, v.ID, hdr.Get("Idempotent-Replayed"), ids[i])
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, id := range ids {
		v := waitWorkflow(t, p, id, 90*time.Second)
		if r := v.result(t, "callback"); v.State != "succeeded" || r.Parents != size {
			t.Fatalf("workflow %s: %s, callback %+v", id, v.State, r)
		}
	}
	db := openDB(t, p.DBURL)
	var rows struct {
		Rows   int `db:"rows"`
		Unsent int `db:"unsent"`
	}
	if err := db.GetContext(context.Background(), &rows,
		`SELECT count(*) AS rows, count(*) FILTER (WHERE sent_at IS NULL) AS unsent FROM outbox`); err != nil {
		t.Fatal(err)
	}
	// n workflows (the retries replayed) of size+1 steps, each step relayed once.
	if rows.Rows != n*(size+1) || rows.Unsent != 0 {
		t.Fatalf("outbox = %+v, want %d rows all sent", rows, n*(size+1))
	}
	t.Logf("two api replicas: %d chords of %d started concurrently (each retried on the other replica: replayed), all succeeded, %d outbox rows each sent once", n, size, rows.Rows)
}

// lastValue prints what *s holds when the message is formatted (a failed
// Eventually), not when the call was made.
type lastValue struct{ s *string }

func (l lastValue) String() string { return *l.s }

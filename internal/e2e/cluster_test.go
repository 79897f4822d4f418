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

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// TestRedisCluster runs the whole platform on a private three-master Redis
// Cluster (REDIS_CLUSTER_ADDRS, with a password) instead of one Redis: tasks
// enqueued through the API and through the outbox relay complete, the
// scheduler takes the leader lease and fires each tick exactly once, and
// readiness, queue statistics, metrics, the dashboard and the login limiter
// all talk to the cluster. No process may log a CROSSSLOT error (a script
// or multi-key command whose keys live in different hash slots).
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t)

	// The schedule fires into a queue no worker serves, so every tick stays
	// pending and can be counted; the api and scheduler accept that queue.
	dir := t.TempDir()
	file := filepath.Join(dir, "schedules.yaml")
	if err := os.WriteFile(file, []byte(`schedules:
  - name: cluster-beat
    spec: "@every 1s"
    task: system:ping
    queue: beat
`), 0o600); err != nil {
		t.Fatal(err)
	}
	const monitorPassword = "dashboard password"
	e := startProduct(t, testenv.PlatformOptions{RedisCluster: cluster, NoWorker: true, Env: []string{
		"WORKER_QUEUES=critical=6,default=3,low=1,beat=1",
		"SCHEDULES_FILE=" + file,
		"LOGIN_MAX_FAILURES=2",
		monitorUsers(t, [3]string{"ops", monitorPassword, ""}),
	}})
	worker, _ := e.StartWorker("WORKER_QUEUES=critical=6,default=3,low=1")
	procs := []*testenv.Proc{e.API, worker}
	defer func() {
		for _, p := range procs {
			if out := p.Output(); strings.Contains(out, "CROSSSLOT") {
				t.Errorf("%s logged CROSSSLOT:\n%s", p.Name, out)
			}
		}
	}()

	// Readiness pings the cluster.
	if status, _, raw := call(t, http.MethodGet, e.APIURL+"/readyz", "", nil, nil); status != http.StatusOK ||
		!strings.Contains(string(raw), `"redis":{"status":"ok"}`) {
		t.Fatalf("/readyz: %d %s", status, raw)
	}

	// A task enqueued through the API completes; the long poll sees it.
	task := enqueue(t, e.Platform, `{"type":"system:ping","retention":3600,"payload":{}}`)
	var done taskView
	if status, raw := e.Do(http.MethodGet, "/api/v1/tasks/"+task.ID+"?wait=30s", nil, &done); status != http.StatusOK ||
		done.State != "completed" || done.Result["pong"] != true {
		t.Fatalf("ping task after ?wait=30s: %d %s", status, raw)
	}

	// A registered user's order goes through the outbox relay to the worker
	// and completes with one confirmation email.
	const email = "cluster@example.com"
	_, token := e.signUp(t, email, "Cluster")
	order := e.createOrder(t, token)
	e.waitCompleted(t, token, []orderView{order}, 60*time.Second)
	e.requireOneConfirmationEach(t, email, []orderView{order})

	// The login limiter counts in the cluster: the third wrong password
	// within the window is refused, and the api never fell back to counting
	// in its own process.
	for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
		status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/login", "",
			map[string]string{"email": email, "password": "wrong password"}, nil)
		if status != want {
			t.Fatalf("wrong login %d: %d %s, want %d", i+1, status, raw, want)
		}
	}
	if out := e.API.Output(); strings.Contains(out, "login limiter: Redis unavailable") {
		t.Fatalf("the login limiter fell back to per-process counting:\n%s", out)
	}

	// The scheduler becomes leader and fires every second, each tick once.
	sched, _ := e.StartScheduler()
	procs = append(procs, sched)
	var list struct {
		Schedules []struct {
			Name       string `json:"name"`
			LastTaskID string `json:"last_task_id"`
		} `json:"schedules"`
		Scheduler struct {
			Leader string `json:"leader"`
		} `json:"scheduler"`
	}
	listSchedules := func() {
		t.Helper()
		if status, raw := e.Do(http.MethodGet, "/api/v1/schedules", nil, &list); status != http.StatusOK {
			t.Fatalf("GET /api/v1/schedules: %d %s", status, raw)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		listSchedules()
		return list.Scheduler.Leader != ""
	}, "the scheduler never took the leader lease: %+v", &list)
	time.Sleep(5 * time.Second)
	if err := sched.Stop(20 * time.Second); err != nil {
		t.Fatalf("scheduler stop: %v", err)
	}
	listSchedules()
	if list.Scheduler.Leader != "" {
		t.Errorf("leader after the scheduler stopped = %q, want the lease released", list.Scheduler.Leader)
	}
	if len(list.Schedules) != 1 || !strings.HasPrefix(list.Schedules[0].LastTaskID, "schedule:cluster-beat:") {
		t.Errorf("schedules after firing = %+v, want cluster-beat with its last task ID", list.Schedules)
	}

	ids, err := cluster.Client(t).LRange(context.Background(), "asynq:{beat}:pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	_, hi, _ := requireEachTickOnce(t, ids, "cluster-beat", sched.Output())
	if id := list.Schedules[0].LastTaskID; id != fmt.Sprintf("schedule:cluster-beat:%d", hi) {
		t.Errorf("last task ID = %s, want the last tick %d", id, hi)
	}

	// Queue statistics (API and metrics) read the cluster.
	var queues struct {
		Queues []struct {
			Queue     string `json:"queue"`
			Pending   int    `json:"pending"`
			Completed int    `json:"completed"`
		} `json:"queues"`
	}
	if status, raw := e.Do(http.MethodGet, "/api/v1/queues", nil, &queues); status != http.StatusOK {
		t.Fatalf("GET /api/v1/queues: %d %s", status, raw)
	}
	got := map[string][2]int{}
	for _, q := range queues.Queues {
		got[q.Queue] = [2]int{q.Pending, q.Completed}
	}
	if got["beat"][0] != len(ids) || got["default"][1] < 1 || got["critical"][1] < 1 {
		t.Errorf("queues (pending, completed) = %v, want beat pending %d and completed tasks in default and critical", got, len(ids))
	}
	fams := metricsOf(t, e.APIURL+"/metrics")
	if up, _ := metricValue(fams, "conveyor_queue_stats_up", nil); up != 1 {
		t.Errorf("conveyor_queue_stats_up = %v, want 1", up)
	}
	if n, ok := metricValue(fams, "asynq_tasks_enqueued_total", map[string]string{"queue": "beat", "state": "pending"}); !ok || int(n) != len(ids) {
		t.Errorf("asynq_tasks_enqueued_total{queue=beat,state=pending} = %v (found %v), want %d", n, ok, len(ids))
	}

	// The dashboard reads the cluster, including its cluster-only page.
	for _, path := range []string{"/monitoring/api/queues", "/monitoring/api/redis_info"} {
		status, raw := testenv.DoJSON(t, http.MethodGet, e.APIURL+path, basicAuth("ops", monitorPassword), nil, nil)
		if status != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, status, raw)
		}
		if path == "/monitoring/api/redis_info" && !strings.Contains(string(raw), `"cluster":true`) {
			t.Errorf("GET %s does not report a cluster: %s", path, raw)
		}
	}
}

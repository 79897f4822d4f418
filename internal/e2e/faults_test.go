package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// The fault suite: each test breaks one thing under the real binaries and
// counts what was accepted, what completed and how many side effects
// (emails) there were. The other faults live beside the feature they
// exercise: worker SIGKILL (product_test.go, recovery_test.go), worker
// SIGTERM (core_test.go), Redis killed and restarted from its AOF
// (outage_test.go), two relays (api_replicas_test.go), the scheduler fleet
// down (cmd/scheduler/replicas_test.go). docs/operations.md lists them all.

// TestRedisFullWithNoeviction: Redis reaches maxmemory with the noeviction
// policy, so it refuses every write. Orders are still accepted (201): they
// and their outbox rows are in PostgreSQL and the relay keeps them; a
// direct enqueue answers 503, not 500. Once memory is freed (here: the
// limit is raised) the backlog drains: every order completes with exactly
// one confirmation email.
func TestRedisFullWithNoeviction(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	e := startProduct(t, testenv.PlatformOptions{RedisURL: rs.URL()})
	const email = "grace@example.com"
	_, token := e.signUp(t, email, "Grace")

	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	ctx := context.Background()
	if p := rdb.ConfigGet(ctx, "maxmemory-policy").Val()["maxmemory-policy"]; p != "noeviction" {
		t.Fatalf("maxmemory-policy = %q, want noeviction", p)
	}
	used, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var usedBytes int64
	for _, line := range strings.Split(used, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			usedBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	// Full: below what is in use already, so every write is refused.
	if err := rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(usedBytes/2, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	full := time.Now()

	const n = 5
	var orders []orderView
	for range n {
		orders = append(orders, e.createOrder(t, token))
	}
	status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/tasks", e.Token, map[string]any{"type": "system:ping"}, nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(string(raw), "redis_unavailable") {
		t.Errorf("direct enqueue while Redis is full: %d %s, want 503 redis_unavailable", status, raw)
	}
	db := openDB(t, e.DBURL)
	var outbox struct {
		Unsent   int    `db:"unsent"`
		Attempts int    `db:"attempts"`
		LastErr  string `db:"last_error"`
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		err := db.GetContext(ctx, &outbox,
			`SELECT count(*) AS unsent, coalesce(sum(attempts), 0) AS attempts, coalesce(max(last_error), '') AS last_error
			   FROM outbox WHERE sent_at IS NULL`)
		if err != nil {
			t.Fatal(err)
		}
		// Full for a while, not a blip: several relay attempts, and the
		// workers miss heartbeats (their reapers must not act on that).
		// (At least one row per order: the order's first task.)
		return outbox.Unsent >= n && outbox.Attempts >= 5 && time.Since(full) >= 5*time.Second
	}, "outbox while Redis is full: %+v, want at least %d unsent rows retried", &outbox, n)
	held := outbox.Unsent
	if !strings.Contains(outbox.LastErr, "OOM") {
		t.Errorf("outbox rows fail with %q, want Redis's OOM error", outbox.LastErr)
	}
	for _, o := range orders {
		if s := e.order(t, token, o.ID).Status; s != "pending" {
			t.Fatalf("order %d is %s while Redis is full, want pending", o.ID, s)
		}
	}

	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	e.waitCompleted(t, token, orders, 120*time.Second)
	emails := e.requireOneConfirmationEach(t, email, orders)
	if err := db.GetContext(ctx, &outbox.Unsent, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	if outbox.Unsent != 0 {
		t.Errorf("%d outbox rows still unsent after memory was freed", outbox.Unsent)
	}
	t.Logf("redis full (noeviction) for %s: %d orders accepted (201), direct enqueue 503, %d outbox rows held (%d failed relay attempts); after freeing memory all %d completed within %s with %d confirmation emails: 0 lost, 0 duplicates",
		freed.Sub(full).Round(100*time.Millisecond), n, held, outbox.Attempts, n, time.Since(freed).Round(100*time.Millisecond), emails)
}

// TestEvictingRedisRefused: with an evicting maxmemory-policy Redis may
// drop queued tasks silently, so the api, the worker and the scheduler
// refuse to start, naming the setting.
func TestEvictingRedisRefused(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	if err := rdb.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	bins := testenv.Binaries(t)
	_, dbURL := testenv.DB(t)
	env := []string{"DATABASE_URL=" + dbURL, "REDIS_URL=" + rs.URL(), "API_TOKEN=e2e-token-0123456789abcdef", "DEV_MODE=true",
		"HTTP_ADDR=" + testenv.FreeAddr(t), "METRICS_ADDR=" + testenv.FreeAddr(t), "LOG_FORMAT=json"}
	for name, bin := range map[string]string{"api": bins.API, "worker": bins.Worker, "scheduler": bins.Scheduler} {
		p := testenv.Start(t, name, bin, env)
		if err := p.Wait(30 * time.Second); err == nil || !strings.Contains(p.Output(), "maxmemory-policy allkeys-lru") {
			t.Errorf("%s with an evicting Redis: exit %v, output:\n%s", name, err, p.Output())
		}
	}
}

// TestPostgresCrashDuringOrderLoad: a private PostgreSQL is stopped with
// `pg_ctl stop -m immediate` (a crash: no checkpoint, WAL recovery at the
// next start) while a client creates orders, then started again. While it
// is down requests fail cleanly (a JSON 503, no hang); once it is back the
// same api, worker and relay processes — none restarted — accept orders
// again within seconds, and every accepted order completes with exactly one
// confirmation email.
func TestPostgresCrashDuringOrderLoad(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPGServer(t)
	// Retries spaced out so a task that hit the outage is not archived
	// before the database is back.
	e := startProduct(t, testenv.PlatformOptions{DatabaseURL: pg.URL(),
		Env: []string{"AUTO_MIGRATE=true", "RETRY_BASE=5s", "RETRY_MAX=20s"}})
	const email = "edsger@example.com"
	_, token := e.signUp(t, email, "Edsger")

	type result struct {
		status int
		at     time.Time
		order  orderView
		body   string
	}
	var (
		mu      sync.Mutex
		results []result
	)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			var o orderView
			status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, orderBody(), &o)
			mu.Lock()
			results = append(results, result{status: status, at: time.Now(), order: o, body: string(raw)})
			mu.Unlock()
		}
	}()

	time.Sleep(time.Second) // some orders before the crash
	pg.Stop("immediate")
	down := time.Now()
	time.Sleep(3 * time.Second) // the outage, under load
	pg.Start()
	up := time.Now()
	var firstOK time.Time
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			if r.status == http.StatusCreated && r.at.After(up) {
				firstOK = r.at
				return true
			}
		}
		return false
	}, "no order accepted after PostgreSQL came back")
	time.Sleep(time.Second) // some orders after
	close(stop)
	<-loadDone

	var accepted []orderView
	failed, unclean := 0, 0
	for _, r := range results {
		switch {
		case r.status == http.StatusCreated:
			accepted = append(accepted, r.order)
		case r.status == http.StatusServiceUnavailable && strings.Contains(r.body, `"database_unavailable"`):
			failed++
		default:
			unclean++
			t.Errorf("order request answered %d %s at %s (down at %s, up at %s)", r.status, r.body, r.at.Format(time.RFC3339Nano), down.Format(time.RFC3339Nano), up.Format(time.RFC3339Nano))
		}
	}
	if failed == 0 {
		t.Errorf("no request failed while PostgreSQL was down: the outage did not happen under load")
	}
	e.waitCompleted(t, token, accepted, 120*time.Second)
	emails := e.requireOneConfirmationEach(t, email, accepted)
	t.Logf("postgres stopped -m immediate for %s under order load: %d orders accepted (201), %d failed cleanly (503 database_unavailable), %d other answers; first order accepted %s after the restart, no process restarted; all %d accepted orders completed with %d confirmation emails: 0 lost, 0 duplicates",
		up.Sub(down).Round(100*time.Millisecond), len(accepted), failed, unclean, firstOK.Sub(up).Round(100*time.Millisecond), len(accepted), emails)
}

// TestWorkerSIGTERMDuringLongTasks: a worker gets SIGTERM while orders are
// inside order:process. Within SHUTDOWN_TIMEOUT they finish there; past it
// (a second worker whose tasks take longer than its timeout) they go back
// to their queue and another worker completes them. Either way every order
// completes with exactly one confirmation email.
func TestWorkerSIGTERMDuringLongTasks(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{NoWorker: true})
	const email = "barbara.liskov@example.com"
	patient, _ := e.StartWorker("ORDER_PROCESS_DELAY=3s")
	_, token := e.signUp(t, email, "Barbara")

	inProcess := func(orders []orderView) func() bool {
		return func() bool {
			for _, o := range orders {
				if e.order(t, token, o.ID).Status != "processing" || e.task(t, o.TaskIDs[0]).State != "active" {
					return false
				}
			}
			return true
		}
	}
	const n = 3
	var finished, requeued []orderView
	for range n {
		finished = append(finished, e.createOrder(t, token))
	}
	testenv.Eventually(t, 60*time.Second, inProcess(finished), "orders never all inside order:process")
	if err := patient.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not stop cleanly: %v", err)
	}
	for _, o := range finished {
		if s := e.order(t, token, o.ID).Status; s != "completed" {
			t.Errorf("order %d is %s after a graceful stop within SHUTDOWN_TIMEOUT, want completed", o.ID, s)
		}
	}

	hasty, _ := e.StartWorker("ORDER_PROCESS_DELAY=10m", "SHUTDOWN_TIMEOUT=1s")
	for range n {
		requeued = append(requeued, e.createOrder(t, token))
	}
	testenv.Eventually(t, 60*time.Second, inProcess(requeued), "orders never all inside order:process")
	if err := hasty.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not stop: %v", err)
	}
	for _, o := range requeued {
		if v := e.task(t, o.TaskIDs[0]); v.State != "pending" {
			t.Errorf("order:process of order %d is %s after the shutdown timeout, want pending (back in its queue)", o.ID, v.State)
		}
	}
	e.StartWorker()
	all := append(finished, requeued...)
	e.waitCompleted(t, token, all, 120*time.Second)
	emails := e.requireOneConfirmationEach(t, email, all)
	t.Logf("worker SIGTERM: %d orders finished within SHUTDOWN_TIMEOUT, %d put back past it and completed by another worker; %d confirmation emails for %d orders: 0 lost, 0 duplicates",
		len(finished), len(requeued), emails, len(all))
}

package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// flowView is what GET /api/v1/tasks/{id} says about flow control.
type flowView struct {
	taskView
	Throttled bool       `json:"throttled"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func getFlow(t *testing.T, p *testenv.Platform, id string) flowView {
	t.Helper()
	var v flowView
	if status, raw := p.Do(http.MethodGet, "/api/v1/tasks/"+id, nil, &v); status != http.StatusOK {
		t.Fatalf("get task %s: %d %s", id, status, raw)
	}
	return v
}

func putLimits(t *testing.T, p *testenv.Platform, taskType, body string) {
	t.Helper()
	if status, raw := p.Do(http.MethodPut, "/api/v1/task-types/"+taskType+"/limits", body, nil); status != http.StatusOK {
		t.Fatalf("put limits %s: %d %s", body, status, raw)
	}
}

// pingRun is when one system:ping handler ran, from its result.
type pingRun struct{ start, end time.Time }

func pingRunOf(t *testing.T, v flowView) pingRun {
	t.Helper()
	parse := func(k string) time.Time {
		s, _ := v.Result[k].(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("task %s: result %v has no %s", v.ID, v.Result, k)
		}
		return at
	}
	return pingRun{parse("started_at"), parse("at")}
}

// waitCompleted waits until every task is completed and returns them.
func waitCompleted(t *testing.T, p *testenv.Platform, ids []string, timeout time.Duration) []flowView {
	t.Helper()
	out := make([]flowView, len(ids))
	done := 0
	testenv.Eventually(t, timeout, func() bool {
		for done < len(ids) {
			v := getFlow(t, p, ids[done])
			if v.State != "completed" {
				return false
			}
			out[done] = v
			done++
		}
		return true
	}, "only %d of %d tasks completed", done, len(ids))
	return out
}

// Three workers share one limit of 10/s (burst 10): 200 tasks all
// complete, no one-second window holds more than limit + burst starts,
// and no task spends a retry on being throttled.
func TestRateLimitHoldsAcrossThreeWorkers(t *testing.T) {
	t.Parallel()
	const limit, burst, n = 10, 10, 200
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	putLimits(t, p, "system:ping", fmt.Sprintf(`{"rate":{"limit":%d,"per":"1s","burst":%d}}`, limit, burst))
	// All queued before the workers start, so the limit (not the speed of
	// enqueueing under load) is what spreads them out.
	ids := make([]string, n)
	for i := range ids {
		ids[i] = enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{}}`).ID
	}
	for range 3 {
		p.StartWorker()
	}
	// While they drain, waiting tasks say why.
	testenv.Eventually(t, 30*time.Second, func() bool {
		v := getFlow(t, p, ids[n-1])
		return v.Throttled && v.State == "retry" && strings.HasPrefix(v.LastError, "throttled: rate") && v.Retried == 0
	}, "the last task was never seen throttled")

	tasks := waitCompleted(t, p, ids, 3*time.Minute)
	starts := make([]time.Time, n)
	for i, v := range tasks {
		if v.Retried != 0 {
			t.Errorf("task %s spent %d retries", v.ID, v.Retried)
		}
		starts[i] = pingRunOf(t, v).start
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	worst := 0
	for i := range starts {
		j := i
		for j < n && starts[j].Sub(starts[i]) < time.Second {
			j++
		}
		worst = max(worst, j-i)
	}
	if worst > limit+burst {
		t.Fatalf("%d starts within one second, limit %d + burst %d", worst, limit, burst)
	}
	span := starts[n-1].Sub(starts[0])
	t.Logf("200 tasks, 3 workers: busiest second %d starts; after the burst %.2f starts/s (limit %d)",
		worst, float64(n-burst)/span.Seconds(), limit)
}

// A per-key limit holds one key back while other keys run at full speed;
// a throttled task says so; a limit changed at run time reaches the
// running worker; an expired task never runs; bad limit bodies are 422.
func TestPerKeyLimitRuntimeChangeAndExpiry(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	// Keyed by sleep_ms: each value is its own bucket of 2 per hour.
	putLimits(t, p, "system:ping", `{"rate":{"limit":2,"per":"1h","key":"sleep_ms"}}`)
	p.StartWorker() // it reads the limits as it starts; later changes reach it while it runs

	var held []string
	for range 4 {
		held = append(held, enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":1}}`).ID)
	}
	var others []string
	for i := range 20 {
		others = append(others, enqueue(t, p, fmt.Sprintf(`{"type":"system:ping","retention":3600,"payload":{"sleep_ms":%d}}`, 10+i)).ID)
	}
	waitCompleted(t, p, others, 30*time.Second)
	throttled := 0
	testenv.Eventually(t, 20*time.Second, func() bool {
		throttled = 0
		for _, id := range held {
			v := getFlow(t, p, id)
			if v.Throttled && v.State == "retry" && v.Retried == 0 &&
				strings.Contains(v.LastError, "rate limit 2 per 1h0m0s (burst 2) per sleep_ms reached") {
				throttled++
			}
		}
		return throttled == 2
	}, "%d of key 1's 4 tasks throttled, want 2 (the other 2 run)", throttled)

	// Lift the limit at run time: the held tasks run, without a restart.
	putLimits(t, p, "system:ping", `{"rate":null}`)
	for _, v := range waitCompleted(t, p, held, 60*time.Second) {
		if v.Retried != 0 {
			t.Errorf("task %s spent %d retries while throttled", v.ID, v.Retried)
		}
	}

	// Expired before it was due: archived, never run.
	exp := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{},"countdown":2,"expires_in":1}`)
	v := waitState(t, p, exp.ID, "archived", 30*time.Second)
	if !strings.HasPrefix(v.LastError, "expired at ") || v.Result != nil {
		t.Fatalf("expired task: last_error %q, result %v", v.LastError, v.Result)
	}

	// Bad bodies name the field.
	for body, field := range map[string]string{
		`{"rate":{"limit":10,"per":"1y"}}`:                     "rate.per",
		`{"rate":{"limit":-1,"per":"1s"}}`:                     "rate.limit",
		`{"concurrency":{"max":1,"fifo":true}}`:                "concurrency.fifo",
		`{"rate":{"limit":10,"per":"1s","key":"merchant_id"}}`: "rate.key",
	} {
		var e struct {
			Error struct {
				Fields map[string]string `json:"fields"`
			} `json:"error"`
		}
		status, raw := p.Do(http.MethodPut, "/api/v1/task-types/system:ping/limits", body, &e)
		if status != http.StatusUnprocessableEntity || e.Error.Fields[field] == "" {
			t.Errorf("%s: %d %s, want 422 naming %s", body, status, raw, field)
		}
	}
}

// Concurrency max 2 across two workers: 8 slow tasks never run more than
// 2 at once (their handlers' start and end times say so), and all finish.
func TestConcurrencyLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	putLimits(t, p, "system:ping", `{"concurrency":{"max":2}}`)
	p.StartWorker()
	p.StartWorker()
	var ids []string
	for range 8 {
		ids = append(ids, enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":1500}}`).ID)
	}
	tasks := waitCompleted(t, p, ids, 2*time.Minute)
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, v := range tasks {
		if v.Retried != 0 {
			t.Errorf("task %s spent %d retries", v.ID, v.Retried)
		}
		r := pingRunOf(t, v)
		edges = append(edges, edge{r.start, 1}, edge{r.end, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	running, most := 0, 0
	for _, e := range edges {
		running += e.delta
		most = max(most, running)
	}
	if most > 2 {
		t.Fatalf("%d handlers ran at once, limit 2", most)
	}
	if most < 2 {
		t.Fatalf("never 2 at once: the limit is not what keeps them apart (most %d)", most)
	}
}

// A worker SIGKILLed while holding the only slot of a key blocks that key
// no longer than the slot's lease (15 s), not until asynq recovers the
// dead worker's task.
func TestKilledWorkersSlotFrees(t *testing.T) {
	t.Parallel()
	p := testenv.StartPlatform(t, testenv.PlatformOptions{NoWorker: true})
	putLimits(t, p, "system:ping", `{"concurrency":{"max":1,"key":"fail"}}`)
	victim, _ := p.StartWorker()
	// Longer than the lease; short enough that, should the dead worker's
	// task be recovered and take the slot again, the test still ends.
	stuck := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":20000,"fail":"order-1"}}`)
	waitState(t, p, stuck.ID, "active", 30*time.Second)
	victim.Kill()
	p.StartWorker()

	next := enqueue(t, p, `{"type":"system:ping","retention":3600,"payload":{"sleep_ms":1,"fail":"order-1"}}`)
	// Throttled first (the dead worker's lease still counts), then run.
	var seen sync.Once
	testenv.Eventually(t, 60*time.Second, func() bool {
		v := getFlow(t, p, next.ID)
		if v.Throttled {
			seen.Do(func() { t.Logf("throttled while the lease lives: %s", v.LastError) })
		}
		// Its handler fails on purpose ("fail"), and only a run counts as a
		// retry: a throttled attempt does not.
		return v.Retried >= 1 && strings.Contains(v.LastError, "order-1")
	}, "the next task of the key never ran after its slot's holder was killed")
}

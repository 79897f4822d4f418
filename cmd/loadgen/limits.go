package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/limits"
	"github.com/conveyor-run/conveyor/tasks"
)

// limitedRate is the limit of the accuracy variant (starts per second, burst
// the same); it drains limitedSeconds of work.
const (
	limitedRate    = 500
	limitedSeconds = 10
)

// limitsScenario measures flow control (internal/limits) with the real
// worker draining a pre-filled queue of system:ping: what the limiter costs
// a type without limits (only a map lookup) and a type whose limits never
// bind (one Redis script per start, two for a concurrency slot), and how
// close a binding rate limit's observed rate is to the limit.
func limitsScenario() Scenario {
	ping := limits.Limits{}
	return Scenario{
		Name: "limits",
		Help: "rate and concurrency limits: cost for unlimited and non-binding types, accuracy of a binding rate",
		Variants: func(p Params) []Variant {
			return []Variant{
				{Name: "conveyor", Run: drainWithLimits(nil, 0)},
				{Name: "unlimited-type", Run: drainWithLimits(map[string]limits.Limits{
					// Another type is limited: the enforcer syncs and runs, ping does not touch Redis.
					tasks.TypeEmailWelcome: {Rate: &limits.Rate{Limit: 10, Per: limits.Duration(time.Second)}},
					tasks.TypeSystemPing:   ping,
				}, 0)},
				{Name: "nonbinding-rate", Run: drainWithLimits(map[string]limits.Limits{tasks.TypeSystemPing: {
					Rate: &limits.Rate{Limit: 10_000, Per: limits.Duration(time.Second), Burst: 1_000_000}}}, 0)},
				{Name: "nonbinding-concurrency", Run: drainWithLimits(map[string]limits.Limits{tasks.TypeSystemPing: {
					Concurrency: &limits.Concurrency{Max: 1_000_000}}}, 0)},
				{Name: "binding-rate", Run: drainWithLimits(map[string]limits.Limits{tasks.TypeSystemPing: {
					Rate: &limits.Rate{Limit: limitedRate, Per: limits.Duration(time.Second)}}},
					min(p.Tasks, limitedRate*limitedSeconds))},
			}
		},
		Ratios: []Ratio{
			{Metric: "tasks_per_s", Num: "unlimited-type", Den: "conveyor"},
			{Metric: "tasks_per_s", Num: "nonbinding-rate", Den: "conveyor"},
			{Metric: "tasks_per_s", Num: "nonbinding-concurrency", Den: "conveyor"},
			{Metric: "cpu_us_per_task", Num: "nonbinding-rate", Den: "conveyor"},
		},
	}
}

// drainWithLimits is the worker scenario's drain with limits stored (as an
// operator's PUT would) before the worker starts. n tasks (0: -tasks); with
// a binding rate limit it also reports the observed start rate after the
// burst, from the handlers' own start times, and its ratio to the limit.
func drainWithLimits(set map[string]limits.Limits, n int) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		if n == 0 {
			n = env.P.Tasks
		}
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		store := limits.NewStore(env.Redis, tasks.All().DefaultLimits())
		var rate *limits.Rate
		for typ, l := range set {
			if _, err := store.Put(ctx, typ, limits.Patch{Rate: l.Rate, RateSet: l.Rate != nil,
				Concurrency: l.Concurrency, ConcurrencySet: l.Concurrency != nil}); err != nil {
				return nil, err
			}
			if typ == tasks.TypeSystemPing && l.Rate != nil && l.Rate.Limit <= limitedRate {
				rate = l.Rate
			}
		}
		insp := asynq.NewInspector(env.RedisO)
		defer insp.Close()
		// Kept, with results: the drain counts completed tasks and reads start times.
		if err := prefillPaused(ctx, env, insp, n, keptPing(time.Hour)); err != nil {
			return nil, err
		}
		proc, err := env.StartWorker(ctx, "WORKER_CONCURRENCY="+strconv.Itoa(env.P.Concurrency), "WORKER_QUEUES=default=1")
		if err != nil {
			return nil, err
		}
		defer proc.Stop()
		time.Sleep(500 * time.Millisecond)
		m := env.meter(ctx, proc)
		if err := insp.UnpauseQueue("default"); err != nil {
			return nil, err
		}
		if err := waitCompleted(ctx, env, "default", n, 5*time.Minute); err != nil {
			return nil, err
		}
		pcpu, rcpu, wall := m.read(ctx)
		processed, failed, err := dailyStats(ctx, env, "default")
		if err != nil {
			return nil, err
		}
		if processed < int64(n) || failed > 0 {
			return nil, fmt.Errorf("processed %d of %d tasks, %d failed (see %s log)", processed, n, failed, proc.Name)
		}
		out := Metrics{
			"tasks_per_s":           float64(n) / wall.Seconds(),
			"cpu_us_per_task":       float64(pcpu.Microseconds()) / float64(n),
			"redis_cpu_us_per_task": float64(rcpu.Microseconds()) / float64(n),
		}
		if rate != nil {
			starts, err := pingStarts(insp, n)
			if err != nil {
				return nil, err
			}
			burst := rate.Limit // the default burst
			span := starts[len(starts)-1].Sub(starts[0])
			observed := float64(len(starts)-burst) / span.Seconds()
			perSecond := float64(rate.Limit) / rate.Per.D().Seconds()
			out["observed_per_s"] = observed
			out["accuracy_pct"] = 100 * observed / perSecond
			out["busiest_1s"] = float64(busiestWindow(starts, time.Second))
		}
		return out, nil
	}
}

// waitCompleted waits until n tasks of queue are completed: throttled
// tasks sit in the retry set, so an empty pending list is not the end.
func waitCompleted(ctx context.Context, env *Env, queue string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	key := "asynq:{" + queue + "}:completed"
	for {
		c, err := env.Redis.ZCard(ctx, key).Result()
		if err == nil && c >= int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d tasks completed after %s", c, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pingStarts reads when each completed system:ping handler started, sorted.
func pingStarts(insp *asynq.Inspector, n int) ([]time.Time, error) {
	var out []time.Time
	for page := 1; len(out) < n; page++ {
		infos, err := insp.ListCompletedTasks("default", asynq.PageSize(1000), asynq.Page(page))
		if err != nil {
			return nil, err
		}
		if len(infos) == 0 {
			break
		}
		for _, i := range infos {
			r, _ := tasks.DecodeResult(i.Result)
			var v struct {
				StartedAt time.Time `json:"started_at"`
			}
			if err := json.Unmarshal(r, &v); err != nil || v.StartedAt.IsZero() {
				return nil, fmt.Errorf("task %s: no started_at in result %q", i.ID, i.Result)
			}
			out = append(out, v.StartedAt)
		}
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("only %d completed tasks found", len(out))
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out, nil
}

// busiestWindow is the most starts within any window of length w.
func busiestWindow(starts []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range starts {
		for j < len(starts) && starts[j].Sub(starts[i]) < w {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

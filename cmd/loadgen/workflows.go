package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// workflowScenario measures workflows with the real api (its relay is the
// backstop for outbox rows nobody dispatched) and the real worker (which
// runs the steps, advances the workflow and dispatches the next steps),
// with the worker's defaults (wake-ups on). Workflows are started with the
// Go API, their first steps handed to a dispatcher as a producer does:
//
//   - chain: -chain-length system:ping steps one after the other; per step,
//     the child's started_at minus its parent's finished_at, both from the
//     step rows in PostgreSQL (the worker's clock: when the parent's handler
//     returned, when the child's task was taken up). The gap holds the
//     advancement transaction and its commit, the way to Redis (the worker's
//     dispatcher) and the worker's pickup. The pickup alone is
//     measured right after on the same worker (plain pings sent into Redis
//     one at a time, enqueue to handler start); overhead = gap − pickup, at
//     the median.
//   - group: a group of -group-size − 1 pings and one callback (a chord),
//     from the commit of workflow.Start to the workflow's end, beside
//     plain: the same number of pings pre-filled in Redis and drained by the
//     same worker (the worker scenario's measurement).
func workflowScenario() Scenario {
	return Scenario{
		Name: "workflow",
		Help: "workflows: step-to-step gap of a chain of -chain-length pings; a chord of -group-size pings vs as many plain pings",
		Variants: func(p Params) []Variant {
			return []Variant{
				{Name: "plain", Run: drainN(p.GroupSize, conveyorEnqueue, "")},
				{Name: "chord", Run: chordRun},
				{Name: "chain", Run: chainRun},
			}
		},
		Ratios: []Ratio{
			{Metric: "tasks_per_s", Num: "chord", Den: "plain"},
		},
	}
}

// startWorkflowProcs starts the api (for its outbox relay) and the worker,
// configured like the plain drain's.
func startWorkflowProcs(ctx context.Context, env *Env) (api, worker *Proc, err error) {
	if err := env.FlushRedis(ctx); err != nil {
		return nil, nil, err
	}
	if api, err = env.StartAPI(ctx); err != nil {
		return nil, nil, err
	}
	if worker, err = env.StartWorker(ctx, "WORKER_CONCURRENCY="+strconv.Itoa(env.P.Concurrency), "WORKER_QUEUES=default=1"); err != nil {
		api.Stop()
		return nil, nil, err
	}
	time.Sleep(500 * time.Millisecond) // let start-up work settle
	return api, worker, nil
}

// startWorkflow starts spec through the Go API, in a transaction of its
// own, and then hands its first steps to a dispatcher, as a producer
// should (workflow.Start); the dispatcher runs until ctx ends.
func startWorkflow(ctx context.Context, env *Env, spec workflow.Spec) (string, error) {
	client, err := queue.NewClient(env.P.RedisURL, tasks.All(), map[string]int{"default": 1})
	if err != nil {
		return "", err
	}
	d := queue.NewDispatcher(env.DB, client, slog.New(slog.DiscardHandler))
	go func() {
		_ = d.Run(ctx)
		client.Close()
	}()
	var v workflow.View
	err = db.InTx(ctx, env.DB, func(tx *sqlx.Tx) error {
		var err error
		v, err = workflow.Start(ctx, tx, tasks.All(), spec, workflow.StartOptions{})
		return err
	})
	if err != nil {
		return "", err
	}
	d.Dispatch(v.Outbox()...)
	return v.ID, nil
}

// waitWorkflow polls the workflow's state every 10 ms until it has ended.
func waitWorkflow(ctx context.Context, env *Env, id string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		var state string
		if err := env.DB.GetContext(ctx, &state, `SELECT state FROM workflows WHERE id = $1`, id); err != nil {
			return "", err
		}
		if state != "running" {
			return state, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("workflow %s still running after %s", id, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stepTimes is a step row's clock, in the workflow's order.
type stepTimes struct {
	StepID     string     `db:"step_id"`
	State      string     `db:"state"`
	StartedAt  *time.Time `db:"started_at"`
	FinishedAt *time.Time `db:"finished_at"`
}

func readSteps(ctx context.Context, env *Env, id string) ([]stepTimes, error) {
	var rows []stepTimes
	err := env.DB.SelectContext(ctx, &rows,
		`SELECT step_id, state, started_at, finished_at FROM workflow_steps
		  WHERE workflow_id = $1 ORDER BY position`, id)
	return rows, err
}

// chainGaps returns, in ms, each step's started_at minus the previous
// step's finished_at, for the steps of a chain in order. Every step must
// have succeeded with both times recorded.
func chainGaps(steps []stepTimes) ([]float64, error) {
	for _, s := range steps {
		if s.State != "succeeded" || s.StartedAt == nil || s.FinishedAt == nil {
			return nil, fmt.Errorf("step %s: state %s, started %v, finished %v", s.StepID, s.State, s.StartedAt, s.FinishedAt)
		}
	}
	if len(steps) < 2 {
		return nil, fmt.Errorf("a chain of %d steps has no step-to-step gap", len(steps))
	}
	gaps := make([]float64, 0, len(steps)-1)
	for i := 1; i < len(steps); i++ {
		gaps = append(gaps, ms(steps[i].StartedAt.Sub(*steps[i-1].FinishedAt)))
	}
	return gaps, nil
}

func chainRun(ctx context.Context, env *Env) (Metrics, error) {
	ctx, cancel := context.WithCancel(ctx) // ends startWorkflow's dispatcher
	defer cancel()
	n := env.P.ChainLength
	api, worker, err := startWorkflowProcs(ctx, env)
	if err != nil {
		return nil, err
	}
	defer api.Stop()
	defer worker.Stop()
	parts := make([]workflow.Part, n)
	for i := range parts {
		parts[i] = workflow.Task("s"+strconv.Itoa(i), tasks.SystemPingPayload{})
	}
	t0 := time.Now()
	id, err := startWorkflow(ctx, env, workflow.Chain(parts...).Named("loadgen-chain"))
	if err != nil {
		return nil, err
	}
	state, err := waitWorkflow(ctx, env, id, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	wall := time.Since(t0)
	if state != "succeeded" {
		return nil, fmt.Errorf("chain workflow %s ended %s (see %s log)", id, state, worker.Name)
	}
	steps, err := readSteps(ctx, env, id)
	if err != nil {
		return nil, err
	}
	gaps, err := chainGaps(steps)
	if err != nil {
		return nil, fmt.Errorf("chain workflow %s: %w", id, err)
	}
	sort.Float64s(gaps)
	pickups, err := measurePickup(ctx, env, n)
	if err != nil {
		return nil, fmt.Errorf("pickup after the chain: %w", err)
	}
	return Metrics{
		"step_gap_p50_ms":      percentile(gaps, 50),
		"step_gap_p99_ms":      percentile(gaps, 99),
		"step_gap_max_ms":      percentile(gaps, 100),
		"pickup_p50_ms":        percentile(pickups, 50),
		"step_overhead_p50_ms": percentile(gaps, 50) - percentile(pickups, 50),
		"chain_s":              wall.Seconds(),
	}, nil
}

// measurePickup sends n system:ping tasks straight into Redis, one every
// 50 ms (the chain's one at a time, so each finds the worker idle), and
// returns, sorted, how long each waited from the enqueue call to its
// handler's start (the ping's result says when it ran).
func measurePickup(ctx context.Context, env *Env, n int) ([]float64, error) {
	// queue.Client, as the dispatcher enqueues (it announces the task to
	// idle workers).
	client, err := queue.NewClient(env.P.RedisURL, tasks.All(), map[string]int{"default": 1})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	var mu sync.Mutex
	sent := map[string]time.Time{}
	const rate = 20
	lat, _ := openLoop(ctx, rate, time.Duration(n)*time.Second/rate, 10, func(ctx context.Context) error {
		t, err := keptPing(10 * time.Minute)(0) // its result says when it ran
		if err != nil {
			return err
		}
		at := time.Now()
		info, err := client.EnqueueTask(ctx, t, asynq.Queue("default"), asynq.Retention(10*time.Minute))
		if err != nil {
			return err
		}
		mu.Lock()
		sent[info.ID] = at
		mu.Unlock()
		return nil
	})
	if e := lat.err.Load(); e > 0 {
		return nil, fmt.Errorf("%d enqueue errors", e)
	}
	if err := waitDrained(ctx, env, "default", time.Minute); err != nil {
		return nil, err
	}
	insp := asynq.NewInspector(env.RedisO)
	defer insp.Close()
	waits := make([]float64, 0, len(sent))
	for id, at := range sent {
		info, err := insp.GetTaskInfo("default", id)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", id, err)
		}
		started, err := handlerStart(info.Result, false)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", id, err)
		}
		waits = append(waits, ms(started.Sub(at)))
	}
	sort.Float64s(waits)
	return waits, nil
}

func chordRun(ctx context.Context, env *Env) (Metrics, error) {
	ctx, cancel := context.WithCancel(ctx) // ends startWorkflow's dispatcher
	defer cancel()
	n := env.P.GroupSize
	if n < 2 || n > workflow.MaxSteps {
		return nil, fmt.Errorf("-group-size must be between 2 and %d", workflow.MaxSteps)
	}
	api, worker, err := startWorkflowProcs(ctx, env)
	if err != nil {
		return nil, err
	}
	defer api.Stop()
	defer worker.Stop()
	// As before an orders run: the chord pays for its own dead rows, not
	// for the orders scenario's, which autovacuum otherwise worked through
	// during the chord (1.2-1.6 s of CPU in some rounds).
	if err := settleOrderTables(ctx, env); err != nil {
		return nil, err
	}
	parts := make([]workflow.Part, n-1)
	for i := range parts {
		parts[i] = workflow.Task("g"+strconv.Itoa(i), tasks.SystemPingPayload{})
	}
	spec := workflow.Chord(workflow.Group(parts...), workflow.Task("callback", tasks.SystemPingPayload{})).Named("loadgen-chord")
	startedAt := time.Now()
	id, err := startWorkflow(ctx, env, spec)
	if err != nil {
		return nil, err
	}
	t0 := time.Now() // the clock starts at the commit, as the plain drain's starts after its fill
	m := env.meter(ctx, api, worker)
	pg0, self0 := env.pgCPU(), procCPU(os.Getpid())
	profiled := []func() error{env.profile(ctx, worker, "chord-worker", env.P.ProfileSpan),
		env.profile(ctx, api, "chord-api", env.P.ProfileSpan)}
	state, err := waitWorkflow(ctx, env, id, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	wall := time.Since(t0)
	pcpu, rcpu, _ := m.read(ctx)
	pgcpu, selfcpu := env.pgCPU()-pg0, procCPU(os.Getpid())-self0
	for _, wait := range profiled {
		if err := wait(); err != nil {
			return nil, err
		}
	}
	if state != "succeeded" {
		return nil, fmt.Errorf("chord workflow %s ended %s (see %s log)", id, state, worker.Name)
	}
	var succeeded int
	if err := env.DB.GetContext(ctx, &succeeded,
		`SELECT count(*) FROM workflow_steps WHERE workflow_id = $1 AND state = 'succeeded'`, id); err != nil {
		return nil, err
	}
	if succeeded != n {
		return nil, fmt.Errorf("chord workflow %s: %d of %d steps succeeded", id, succeeded, n)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	out := Metrics{
		"tasks_per_s":                float64(n) / wall.Seconds(),
		"start_ms":                   ms(t0.Sub(startedAt)),
		"api_worker_cpu_us_per_task": per(pcpu),
		"redis_cpu_us_per_task":      per(rcpu),
		// The producer's dispatch of the group's steps (claim, enqueue,
		// mark sent) runs in this process.
		"loadgen_cpu_us_per_task": per(selfcpu),
	}
	if pgcpu > 0 {
		out["pg_cpu_us_per_task"] = per(pgcpu)
	}
	return out, nil
}

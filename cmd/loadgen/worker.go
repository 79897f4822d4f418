package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/tasks"
)

// workerScenario drains a pre-filled queue of system:ping with the real
// worker binary and with raw asynq (no-op handler; and keeping each task an
// hour with a result, as asynq users who read results do).
func workerScenario() Scenario {
	return Scenario{
		Name: "worker",
		Help: "drain a pre-filled queue of system:ping: real worker vs raw asynq on the same Redis",
		Variants: func(p Params) []Variant {
			return []Variant{
				{Name: "asynq-raw", Run: drain(rawEnqueue(0), "noop")},
				{Name: "asynq-raw-retain1h", Run: drain(rawEnqueue(time.Hour), "result")},
				{Name: "conveyor", Run: drain(conveyorEnqueue, "")},
			}
		},
		Ratios: []Ratio{
			{Metric: "tasks_per_s", Num: "conveyor", Den: "asynq-raw"},
			{Metric: "tasks_per_s", Num: "conveyor", Den: "asynq-raw-retain1h"},
			{Metric: "redis_mem_mb", Num: "conveyor", Den: "asynq-raw-retain1h"},
		},
	}
}

// A taskMaker builds the i-th task to pre-fill.
type taskMaker func(i int) (*asynq.Task, error)

func rawEnqueue(retention time.Duration) taskMaker {
	return func(int) (*asynq.Task, error) {
		var opts []asynq.Option
		if retention > 0 {
			opts = append(opts, asynq.Retention(retention))
		}
		return asynq.NewTask(tasks.TypeSystemPing, []byte(`{}`), opts...), nil
	}
}

// conveyorEnqueue builds the task as the API and the registry do, with the
// type's own options (queue, retry, timeout, retention: a ping keeps
// nothing).
func conveyorEnqueue(int) (*asynq.Task, error) { return tasks.New(tasks.SystemPingPayload{}) }

// keptPing is a ping kept for d with its result, as a caller of POST
// /api/v1/tasks with "retention" gets it: for scenarios that read the
// handlers' start times back.
func keptPing(d time.Duration) taskMaker {
	return func(int) (*asynq.Task, error) {
		return tasks.NewWithHeaders(tasks.SystemPingPayload{}, map[string]string{tasks.HeaderKeepResult: "1"}, asynq.Retention(d))
	}
}

// prefill enqueues n tasks into the paused default queue with 8 goroutines.
func prefill(ctx context.Context, env *Env, n int, mk taskMaker) error {
	client := asynq.NewClient(env.RedisO)
	defer client.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				t, err := mk(i)
				if err == nil {
					_, err = client.EnqueueContext(ctx, t, asynq.Queue("default"))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// prefillPaused fills the default queue with n tasks, pausing it after the
// first, and leaves it paused: the worker starts on a full queue and the
// drain's clock covers draining only, not filling or the worker's start.
func prefillPaused(ctx context.Context, env *Env, insp *asynq.Inspector, n int, mk taskMaker) error {
	if err := prefill(ctx, env, 1, mk); err != nil {
		return err
	}
	if err := insp.PauseQueue("default"); err != nil {
		return err
	}
	return prefill(ctx, env, n-1, mk)
}

// drain measures one worker draining env.P.Tasks pings: rawMode "" starts
// the real worker, otherwise the raw anchor with that handler mode.
func drain(mk taskMaker, rawMode string) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		return drainN(env.P.Tasks, mk, rawMode)(ctx, env)
	}
}

// drainN is drain of n tasks.
func drainN(n int, mk taskMaker, rawMode string) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		insp := asynq.NewInspector(env.RedisO)
		defer insp.Close()
		if err := prefillPaused(ctx, env, insp, n, mk); err != nil {
			return nil, err
		}
		conc := strconv.Itoa(env.P.Concurrency)
		var proc *Proc
		var err error
		if rawMode == "" {
			proc, err = env.StartWorker(ctx, "WORKER_CONCURRENCY="+conc, "WORKER_QUEUES=default=1")
		} else {
			args := []string{"-concurrency", conc, "-mode", rawMode}
			if env.P.ProfileDir != "" { // its whole run: the anchor has no side port
				if err := os.MkdirAll(env.P.ProfileDir, 0o755); err != nil {
					return nil, err
				}
				path := filepath.Join(env.P.ProfileDir, fmt.Sprintf("asynq-raw-%s-%03d.pprof", rawMode, env.seq+1))
				args = append(args, "-cpuprofile", path)
			}
			proc, err = env.StartRaw(ctx, args...)
		}
		if err != nil {
			return nil, err
		}
		defer proc.Stop()
		time.Sleep(500 * time.Millisecond) // let start-up work settle before the meter starts

		if err := insp.UnpauseQueue("default"); err != nil {
			return nil, err
		}
		// The clock starts at the first dequeue: an idle worker's next look
		// at its queues is up to 1.5 poll intervals away, which is pickup
		// latency (the pickup scenario), not throughput.
		if err := waitFirstDequeue(ctx, env, "default", n); err != nil {
			return nil, err
		}
		// -profile: the worker's CPU over the first seconds of the drain
		// (the raw anchor has no side port).
		profiled := env.profile(ctx, proc, "worker-drain", env.P.ProfileSpan)
		m := env.meter(ctx, proc)
		if err := waitDrained(ctx, env, "default", 5*time.Minute); err != nil {
			return nil, err
		}
		pcpu, rcpu, wall := m.read(ctx)
		if err := profiled(); err != nil {
			return nil, err
		}
		processed, failed, err := dailyStats(ctx, env, "default")
		if err != nil {
			return nil, err
		}
		if processed < int64(n) || failed > 0 {
			return nil, fmt.Errorf("processed %d of %d tasks, %d failed (see %s log)", processed, n, failed, proc.Name)
		}
		return Metrics{
			"tasks_per_s":           float64(n) / wall.Seconds(),
			"cpu_us_per_task":       float64(pcpu.Microseconds()) / float64(n),
			"redis_cpu_us_per_task": float64(rcpu.Microseconds()) / float64(n),
			"redis_mem_mb":          env.RedisMemoryMB(ctx),
			"peak_rss_mb":           procPeakRSSMB(proc.Pid()), // what its GC setting costs in memory
		}, nil
	}
}

// waitDrained polls (cheaply: two LLENs every 10 ms, no inspector scripts)
// until the queue has nothing pending or active.
func waitDrained(ctx context.Context, env *Env, queue string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pending, active := "asynq:{"+queue+"}:pending", "asynq:{"+queue+"}:active"
	for {
		p, err1 := env.Redis.LLen(ctx, pending).Result()
		a, err2 := env.Redis.LLen(ctx, active).Result()
		if err1 == nil && err2 == nil && p == 0 && a == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s not drained after %s (pending %d, active %d)", queue, timeout, p, a)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitFirstDequeue polls until the queue has fewer than n pending tasks.
func waitFirstDequeue(ctx context.Context, env *Env, queue string, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := env.Redis.LLen(ctx, "asynq:{"+queue+"}:pending").Result()
		if err == nil && p < int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no task of queue %s taken within 30s", queue)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// dailyStats reads asynq's processed and failed counters of today.
func dailyStats(ctx context.Context, env *Env, queue string) (processed, failed int64, err error) {
	insp := asynq.NewInspector(env.RedisO)
	defer insp.Close()
	info, err := insp.GetQueueInfo(queue)
	if err != nil {
		return 0, 0, err
	}
	return int64(info.Processed), int64(info.Failed), nil
}

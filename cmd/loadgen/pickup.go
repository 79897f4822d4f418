package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/tasks"
)

// pickupScenario sends system:ping at a low fixed rate into an idle worker
// and measures how long each task waits before its handler starts, and what
// the worker and Redis cost while idle: Conveyor's worker as configured by
// default (wake-ups), and for each WORKER_POLL_INTERVAL of -poll-intervals
// Conveyor's worker polling (WORKER_WAKEUPS=false) beside raw asynq with
// the same TaskCheckInterval.
func pickupScenario() Scenario {
	return Scenario{
		Name: "pickup",
		Help: "pickup latency at a low fixed rate into an idle worker, and idle CPU (worker + Redis)",
		Variants: func(p Params) []Variant {
			vs := []Variant{{Name: "conveyor-wakeups", Run: pickup("", pickupWakeups)}}
			for _, s := range strings.Split(p.PollIntervals, ",") {
				s = strings.TrimSpace(s)
				if s == "" {
					continue
				}
				vs = append(vs,
					Variant{Name: "asynq-raw-poll=" + s, Run: pickup(s, pickupRaw)},
					Variant{Name: "conveyor-poll=" + s, Run: pickup(s, pickupPolling)})
			}
			return vs
		},
	}
}

// How a pickup variant's worker finds work.
type pickupMode int

const (
	pickupRaw     pickupMode = iota // raw asynq polling at the interval
	pickupPolling                   // Conveyor's worker, WORKER_WAKEUPS=false, polling at the interval
	pickupWakeups                   // Conveyor's worker as configured by default
)

func pickup(interval string, mode pickupMode) func(context.Context, *Env) (Metrics, error) {
	raw := mode == pickupRaw
	return func(ctx context.Context, env *Env) (Metrics, error) {
		var d time.Duration
		if mode != pickupWakeups {
			var err error
			if d, err = time.ParseDuration(interval); err != nil {
				return nil, fmt.Errorf("-poll-intervals: %w", err)
			}
		}
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		var proc *Proc
		var err error
		switch mode {
		case pickupRaw:
			proc, err = env.StartRaw(ctx, "-mode", "stamp", "-poll", d.String(), "-concurrency", "10")
		case pickupPolling:
			proc, err = env.StartWorker(ctx, "WORKER_WAKEUPS=false", "WORKER_POLL_INTERVAL="+d.String())
		default:
			proc, err = env.StartWorker(ctx)
		}
		if err != nil {
			return nil, err
		}
		defer proc.Stop()
		time.Sleep(time.Second)

		idle := env.meter(ctx, proc)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(env.P.IdleWindow):
		}
		ip, ir, iw := idle.read(ctx)

		// Each side enqueues as its producers do: raw asynq with its client,
		// Conveyor with queue.Client (what the api, relay and scheduler use,
		// which announces the task to idle workers).
		var enqueue func(context.Context, *asynq.Task) (string, error)
		if raw {
			client := asynq.NewClient(env.RedisO)
			defer client.Close()
			enqueue = func(ctx context.Context, t *asynq.Task) (string, error) {
				info, err := client.EnqueueContext(ctx, t, asynq.Queue("default"))
				if err != nil {
					return "", err
				}
				return info.ID, nil
			}
		} else {
			client, err := queue.NewClient(env.P.RedisURL, tasks.All(), map[string]int{"default": 1})
			if err != nil {
				return nil, err
			}
			defer client.Close()
			enqueue = func(ctx context.Context, t *asynq.Task) (string, error) {
				// The retention given here wins over the type's (none for a ping).
				info, err := client.EnqueueTask(ctx, t, asynq.Queue("default"), asynq.Retention(10*time.Minute))
				return info.ID, err
			}
		}
		var mu sync.Mutex
		sent := map[string]time.Time{}
		load := env.meter(ctx, proc)
		lat, _ := openLoop(ctx, env.P.PickupRate, env.P.PickupDuration, 100, func(ctx context.Context) error {
			var t *asynq.Task
			var err error
			// Kept 10 minutes whatever the type's retention, to read the handler's start time.
			if raw {
				t = asynq.NewTask(tasks.TypeSystemPing, []byte(`{}`), asynq.Retention(10*time.Minute))
			} else if t, err = keptPing(10 * time.Minute)(0); err != nil {
				return err
			}
			at := time.Now()
			id, err := enqueue(ctx, t)
			if err != nil {
				return err
			}
			mu.Lock()
			sent[id] = at
			mu.Unlock()
			return nil
		})
		if n := lat.err.Load(); n > 0 {
			return nil, fmt.Errorf("%d enqueue errors", n)
		}
		if err := waitDrained(ctx, env, "default", time.Minute); err != nil {
			return nil, err
		}
		lp, lr, lw := load.read(ctx)

		insp := asynq.NewInspector(env.RedisO)
		defer insp.Close()
		var waits []float64
		for id, at := range sent {
			info, err := insp.GetTaskInfo("default", id)
			if err != nil {
				return nil, fmt.Errorf("task %s: %w", id, err)
			}
			started, err := handlerStart(info.Result, raw)
			if err != nil {
				return nil, fmt.Errorf("task %s: %w", id, err)
			}
			waits = append(waits, ms(started.Sub(at)))
		}
		sort.Float64s(waits)
		return Metrics{
			"pickup_p50_ms":      percentile(waits, 50),
			"pickup_p99_ms":      percentile(waits, 99),
			"pickup_max_ms":      percentile(waits, 100),
			"idle_cpu_pct":       pct(ip+ir, iw),
			"idle_redis_cpu_pct": pct(ir, iw),
			"load_cpu_pct":       pct(lp+lr, lw),
		}, nil
	}
}

// handlerStart reads when the handler ran from a task's result: raw stamps
// Unix ns; system:ping's result (in Conveyor's envelope) carries "at".
func handlerStart(result []byte, raw bool) (time.Time, error) {
	if raw {
		ns, err := strconv.ParseInt(string(result), 10, 64)
		return time.Unix(0, ns), err
	}
	r, _ := tasks.DecodeResult(result)
	var v struct {
		At time.Time `json:"at"`
	}
	if err := json.Unmarshal(r, &v); err != nil || v.At.IsZero() {
		return time.Time{}, fmt.Errorf("no handler time in result %q", result)
	}
	return v.At, nil
}

func pct(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / wall.Seconds() }

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

	"github.com/conveyor-run/conveyor/tasks"
)

// pickupScenario sends system:ping at a low fixed rate into an idle worker
// and measures how long each task waits before its handler starts, and what
// the worker and Redis cost while idle, for each WORKER_POLL_INTERVAL of
// -poll-intervals, beside raw asynq with the same TaskCheckInterval.
func pickupScenario() Scenario {
	return Scenario{
		Name: "pickup",
		Help: "pickup latency at a low fixed rate into an idle worker, and idle CPU (worker + Redis)",
		Variants: func(p Params) []Variant {
			var vs []Variant
			for _, s := range strings.Split(p.PollIntervals, ",") {
				s = strings.TrimSpace(s)
				if s == "" {
					continue
				}
				vs = append(vs,
					Variant{Name: "asynq-raw-poll=" + s, Run: pickup(s, true)},
					Variant{Name: "conveyor-poll=" + s, Run: pickup(s, false)})
			}
			return vs
		},
	}
}

func pickup(interval string, raw bool) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		d, err := time.ParseDuration(interval)
		if err != nil {
			return nil, fmt.Errorf("-poll-intervals: %w", err)
		}
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		var proc *Proc
		if raw {
			proc, err = env.StartRaw(ctx, "-mode", "stamp", "-poll", d.String(), "-concurrency", "10")
		} else {
			proc, err = env.StartWorker(ctx, "WORKER_POLL_INTERVAL="+d.String())
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

		client := asynq.NewClient(env.RedisO)
		defer client.Close()
		var mu sync.Mutex
		sent := map[string]time.Time{}
		load := env.meter(ctx, proc)
		lat, _ := openLoop(ctx, env.P.PickupRate, env.P.PickupDuration, 100, func(ctx context.Context) error {
			var t *asynq.Task
			var err error
			// Kept 10 minutes whatever the type's retention, to read the handler's start time.
			if raw {
				t = asynq.NewTask(tasks.TypeSystemPing, []byte(`{}`), asynq.Retention(10*time.Minute))
			} else if t, err = tasks.New(tasks.SystemPingPayload{}, asynq.Retention(10*time.Minute)); err != nil {
				return err
			}
			at := time.Now()
			info, err := client.EnqueueContext(ctx, t, asynq.Queue("default"))
			if err != nil {
				return err
			}
			mu.Lock()
			sent[info.ID] = at
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

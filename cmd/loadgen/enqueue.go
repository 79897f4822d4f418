package main

import (
	"context"
	"net/http"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/tasks"
)

// enqueueScenario compares enqueueing system:ping over HTTP (one task per
// request, and batches) with the asynq client enqueueing straight into Redis.
func enqueueScenario() Scenario {
	return Scenario{
		Name: "enqueue",
		Help: "enqueue system:ping: asynq client vs POST /api/v1/tasks vs POST /api/v1/tasks/batch",
		Variants: func(p Params) []Variant {
			return []Variant{
				{Name: "asynq-client", Run: enqueueClient},
				{Name: "http-single", Run: enqueueHTTP(false)},
				{Name: "http-batch", Run: enqueueHTTP(true)},
			}
		},
		Ratios: []Ratio{
			{Metric: "tasks_per_s", Num: "http-single", Den: "asynq-client"},
			{Metric: "tasks_per_s", Num: "http-batch", Den: "asynq-client"},
		},
	}
}

func enqueueClient(ctx context.Context, env *Env) (Metrics, error) {
	if err := env.FlushRedis(ctx); err != nil {
		return nil, err
	}
	client := asynq.NewClient(env.RedisO)
	defer client.Close()
	lat, wall := closedLoop(ctx, env.P.ClientGoroutines, env.P.Duration, func(ctx context.Context) error {
		t, err := tasks.New(tasks.SystemPingPayload{})
		if err != nil {
			return err
		}
		_, err = client.EnqueueContext(ctx, t)
		return err
	})
	return rateMetrics(lat, wall, 1), nil
}

func enqueueHTTP(batch bool) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		api, err := env.StartAPI(ctx)
		if err != nil {
			return nil, err
		}
		defer api.Stop()
		c := httpClient(env.P.Conns)
		one := map[string]any{"type": tasks.TypeSystemPing, "payload": map[string]any{}}
		url, body, per := "http://"+api.Addr+"/api/v1/tasks", any(one), 1
		if batch {
			items := make([]any, env.P.BatchSize)
			for i := range items {
				items[i] = one
			}
			url, body, per = url+"/batch", map[string]any{"tasks": items}, env.P.BatchSize
			status, err := call(ctx, c, http.MethodPost, url, APIToken, body, nil)
			if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
				return nil, errSkip{"POST /api/v1/tasks/batch does not exist in this build"}
			}
			if err != nil {
				return nil, err
			}
		}
		m := env.meter(ctx, api)
		lat, wall := closedLoop(ctx, env.P.Conns, env.P.Duration, func(ctx context.Context) error {
			_, err := call(ctx, c, http.MethodPost, url, APIToken, body, nil)
			return err
		})
		out := rateMetrics(lat, wall, per)
		pcpu, rcpu, _ := m.read(ctx)
		if n := float64(len(lat.ds) * per); n > 0 {
			out["api_cpu_us_per_task"] = float64(pcpu.Microseconds()) / n
			out["redis_cpu_us_per_task"] = float64(rcpu.Microseconds()) / n
		}
		return out, nil
	}
}

// rateMetrics turns a closed loop's latencies into tasks/s and percentiles;
// per is the number of tasks per call.
func rateMetrics(lat *latencies, wall time.Duration, per int) Metrics {
	s := lat.sorted()
	return Metrics{
		"tasks_per_s": float64(len(s)*per) / wall.Seconds(),
		"p50_ms":      percentile(s, 50),
		"p99_ms":      percentile(s, 99),
		"errors":      float64(lat.err.Load()),
	}
}

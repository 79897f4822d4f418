package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
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
	self := procCPU(os.Getpid())
	rd := env.RedisCPU(ctx)
	lat, wall := closedLoop(ctx, env.P.ClientGoroutines, env.P.Duration, func(ctx context.Context) error {
		t, err := tasks.New(tasks.SystemPingPayload{})
		if err != nil {
			return err
		}
		_, err = client.EnqueueContext(ctx, t)
		return err
	})
	out := rateMetrics(lat, wall, 1)
	if n := float64(len(lat.ds)); n > 0 {
		out["loadgen_cpu_us_per_task"] = float64((procCPU(os.Getpid()) - self).Microseconds()) / n
		out["redis_cpu_us_per_task"] = float64((env.RedisCPU(ctx) - rd).Microseconds()) / n
	}
	return out, nil
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
		one := map[string]any{"type": tasks.TypeSystemPing, "payload": map[string]any{}}
		url, body, per := "http://"+api.Addr+"/api/v1/tasks", any(one), 1
		if batch {
			items := make([]any, env.P.BatchSize)
			for i := range items {
				items[i] = one
			}
			url, body, per = url+"/batch", map[string]any{"tasks": items}, env.P.BatchSize
			status, err := call(ctx, httpClient(1), http.MethodPost, url, APIToken, body, nil)
			if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
				return nil, errSkip{"POST /api/v1/tasks/batch does not exist in this build"}
			}
			if err != nil {
				return nil, err
			}
		}
		// Encoded once, as a client sending the same body would: the
		// load generator shares the machine's CPUs with the api and Redis.
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		name := "http-single"
		if batch {
			name = "http-batch"
		}
		send, closeClient, err := env.enqueueSender(api.Addr, url, raw, per)
		if err != nil {
			return nil, err
		}
		defer closeClient()
		profiled := env.profileAPI(ctx, api, name)
		stopSelf, err := env.profileSelf(name)
		if err != nil {
			return nil, err
		}
		m := env.meter(ctx, api)
		calls0 := env.RedisCalls(ctx)
		self := procCPU(os.Getpid())
		lat, wall := closedLoop(ctx, env.P.Conns, env.P.Duration, send)
		stopSelf()
		out := rateMetrics(lat, wall, per)
		pcpu, rcpu, _ := m.read(ctx)
		calls := env.RedisCalls(ctx) - calls0
		if n := float64(len(lat.ds) * per); n > 0 {
			out["api_cpu_us_per_task"] = float64(pcpu.Microseconds()) / n
			out["redis_cpu_us_per_task"] = float64(rcpu.Microseconds()) / n
			out["redis_calls_per_task"] = float64(calls) / n
			// The generator's own CPU (the asynq client's, or the HTTP
			// client's): all three share the machine's cores.
			out["loadgen_cpu_us_per_task"] = float64((procCPU(os.Getpid()) - self).Microseconds()) / n
		}
		// What the api's garbage-collection setting (GOGC) costs in memory.
		out["api_peak_rss_mb"] = procPeakRSSMB(api.Pid())
		if err := profiled(); err != nil {
			return nil, err
		}
		return out, nil
	}
}

// enqueueSender returns the closed loop's call: POST raw to url with the
// client -http-client names, and check the answer as a caller would, so a
// request counts as done only if every one of its per tasks was enqueued.
func (e *Env) enqueueSender(host, url string, raw []byte, per int) (send func(context.Context) error, closeClient func(), err error) {
	check := func(status int, body []byte) error {
		if status != http.StatusAccepted {
			return fmt.Errorf("POST %s: %d %s", url, status, bytes.TrimSpace(body))
		}
		return checkEnqueued(body, per)
	}
	switch e.P.HTTPClient {
	case "lean":
		path := strings.TrimPrefix(url, "http://"+host)
		c := newLeanClient(host, e.P.Conns)
		req := newLeanRequest(host, path, APIToken, raw)
		return func(ctx context.Context) error { return c.Do(ctx, req, check) }, c.Close, nil
	case "net/http":
		c := httpClient(e.P.Conns)
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(raw))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+APIToken)
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			return check(resp.StatusCode, b)
		}, c.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("-http-client %q: want lean or net/http", e.P.HTTPClient)
}

// checkEnqueued checks the body of a 202 from POST /api/v1/tasks (per == 1)
// or /api/v1/tasks/batch: every task has an ID and is pending.
func checkEnqueued(body []byte, per int) error {
	type task struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	var ts []task
	if per == 1 {
		var t task
		if err := json.Unmarshal(body, &t); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		ts = []task{t}
	} else {
		var b struct{ Tasks []task }
		if err := json.Unmarshal(body, &b); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		ts = b.Tasks
	}
	if len(ts) != per {
		return fmt.Errorf("answer holds %d tasks, want %d", len(ts), per)
	}
	for i, t := range ts {
		if t.ID == "" || t.State != "pending" {
			return fmt.Errorf("task %d of the answer: id %q, state %q", i, t.ID, t.State)
		}
	}
	return nil
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

// profileAPI starts a CPU profile of the api over the closed loop (-profile:
// through its side port's /debug/pprof/profile) and returns the function
// that waits for it and writes it to <dir>/<name>-<n>.pprof. Without
// -profile it does nothing.
func (e *Env) profileAPI(ctx context.Context, api *Proc, name string) (wait func() error) {
	return e.profile(ctx, api, name, e.P.Duration-time.Second)
}

// profileSelf starts a CPU profile of the load generator itself (-profile:
// <dir>/loadgen-<name>-<n>.pprof), which shares the machine with what it
// measures; stop ends it.
func (e *Env) profileSelf(name string) (stop func(), err error) {
	if e.P.ProfileDir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(e.P.ProfileDir, 0o755); err != nil {
		return nil, err
	}
	e.seq++
	f, err := os.Create(filepath.Join(e.P.ProfileDir, fmt.Sprintf("loadgen-%s-%03d.pprof", name, e.seq)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// profile is profileAPI for any child with a side port, over d (whole
// seconds, at least one).
func (e *Env) profile(ctx context.Context, p *Proc, name string, d time.Duration) (wait func() error) {
	if e.P.ProfileDir == "" || p.Side == "" {
		return func() error { return nil }
	}
	e.seq++
	path := filepath.Join(e.P.ProfileDir, fmt.Sprintf("%s-%03d.pprof", name, e.seq))
	secs := max(1, int(d/time.Second))
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.Side, secs)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("profile %s: %w", p.Name, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("profile %s: %s", p.Name, resp.Status)
			}
			if err := os.MkdirAll(e.P.ProfileDir, 0o755); err != nil {
				return err
			}
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return err
			}
			fmt.Fprintf(e.Log, "loadgen: %s CPU profile in %s\n", p.Name, path)
			return f.Close()
		}()
	}()
	return func() error { return <-done }
}

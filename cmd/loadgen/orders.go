package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

// ordersScenario places orders through the real api and follows each one
// until the real worker has processed it and sent its confirmation email
// (to an SMTP sink): closed loop at -conns connections, then open loop at a
// fixed -rate for -rate-duration, after -rate-warmup at the same rate
// whose orders are reported apart (warmup_*): the open loop measures the
// steady state, not the processes' first second (connections opened,
// heaps and stacks grown). Latencies after the POST come from the rows the
// binaries write: orders.created_at, orders.processed_at,
// email_log.sent_at.
func ordersScenario() Scenario {
	return Scenario{
		Name: "orders",
		Help: "POST /api/v1/orders end to end (order processed + confirmation email sent), closed and open loop",
		Variants: func(p Params) []Variant {
			return []Variant{
				{Name: fmt.Sprintf("closed-%dconns", p.Conns), Run: runOrders(false)},
				{Name: fmt.Sprintf("open-%dps", p.Rate), Run: runOrders(true)},
			}
		},
	}
}

var orderBody = map[string]any{
	"items":    []map[string]any{{"sku": "LOADGEN-1", "quantity": 2, "unit_price_cents": 1250}},
	"currency": "EUR",
}

func runOrders(open bool) func(context.Context, *Env) (Metrics, error) {
	return func(ctx context.Context, env *Env) (Metrics, error) {
		if err := env.FlushRedis(ctx); err != nil {
			return nil, err
		}
		apiEnv, workerEnv, err := orderDBConns(env.P.OrderDBConns)
		if err != nil {
			return nil, err
		}
		api, err := env.StartAPI(ctx, apiEnv...)
		if err != nil {
			return nil, err
		}
		defer api.Stop()
		worker, err := env.StartWorker(ctx, append(workerEnv, "WORKER_CONCURRENCY="+strconv.Itoa(env.P.OrderWorkers))...)
		if err != nil {
			return nil, err
		}
		defer worker.Stop()
		if err := settleOrderTables(ctx, env); err != nil {
			return nil, err
		}

		base := "http://" + api.Addr + "/api/v1"
		token, err := newUser(ctx, env, base)
		if err != nil {
			return nil, err
		}
		conns := env.P.Conns
		if open {
			conns = 1000
		}
		post, closeClient, err := orderPoster(env, api.Addr, token, conns)
		if err != nil {
			return nil, err
		}
		defer closeClient()
		var mu sync.Mutex
		var ids, warmIDs []int64 // measured orders, warm-up orders
		place := func(ctx context.Context, measured bool) error {
			id, err := post(ctx)
			if err != nil {
				return err
			}
			mu.Lock()
			if measured {
				ids = append(ids, id)
			} else {
				warmIDs = append(warmIDs, id)
			}
			mu.Unlock()
			return nil
		}

		name, span := "orders-closed", env.P.Duration
		if open {
			name, span = "orders-open", env.P.RateDuration
		}
		span -= time.Second
		// The meters and profiles start with the measurement: after the
		// open loop's warm-up, when the processes have opened their
		// connections and grown their heaps and stacks.
		var (
			profiled    []func() error
			m           *cpuMeter
			pg0, self0  time.Duration
			measureFrom time.Time
		)
		stopSelf := func() {}
		defer func() { stopSelf() }()
		measure := func() {
			profiled = []func() error{env.profile(ctx, api, name+"-api", span), env.profile(ctx, worker, name+"-worker", span)}
			if stop, err := env.profileSelf(name); err == nil {
				stopSelf = stop
			}
			m = env.meter(ctx, api, worker)
			pg0, self0, measureFrom = env.pgCPU(), procCPU(os.Getpid()), time.Now()
		}
		var lat, warm *latencies
		var wall time.Duration
		out := Metrics{}
		if open {
			var dropped int
			lat, warm, dropped = warmOpenLoop(ctx, env.P.Rate, env.P.RateWarmup, env.P.RateDuration, conns, measure, place)
			if m == nil { // no measured call was due (ctx ended in the warm-up, or -rate-duration 0)
				measure()
			}
			wall = time.Since(measureFrom)
			out["dropped"] = float64(dropped)
			if w := warm.sorted(); len(w) > 0 {
				out["warmup_post_p99_ms"] = percentile(w, 99)
			}
		} else {
			measure()
			lat, wall = closedLoop(ctx, conns, env.P.Duration, func(ctx context.Context) error { return place(ctx, true) })
		}
		for _, wait := range profiled {
			if err := wait(); err != nil {
				return nil, err
			}
		}
		stopSelf()
		stopSelf = func() {}
		s := lat.sorted()
		out["accepted_per_s"] = float64(len(s)) / wall.Seconds()
		out["post_p50_ms"] = percentile(s, 50)
		out["post_p99_ms"] = percentile(s, 99)
		out["errors"] = float64(lat.err.Load())
		if open {
			out["errors"] += float64(warm.err.Load()) // an error in the warm-up is an error too
		}

		if len(warmIDs) > 0 {
			// Waited for first (they were placed first), reported apart.
			warmE2E, err := waitOrders(ctx, env, warmIDs, env.P.CompletionTimeout)
			if err != nil {
				return nil, fmt.Errorf("warm-up orders: %w", err)
			}
			out["warmup_email_sent_p99_ms"] = warmE2E["email_sent_p99_ms"]
		}
		e2e, err := waitOrders(ctx, env, ids, env.P.CompletionTimeout)
		if err != nil {
			return nil, err
		}
		pcpu, rcpu, _ := m.read(ctx)
		self := procCPU(os.Getpid()) - self0
		for k, v := range e2e {
			out[k] = v
		}
		if n := float64(len(ids)); n > 0 {
			out["app_cpu_us_per_order"] = float64(pcpu.Microseconds()) / n
			out["redis_cpu_us_per_order"] = float64(rcpu.Microseconds()) / n
			// The load tool's own share (HTTP client, SMTP sink, polling),
			// taken from the same two cores.
			out["loadgen_cpu_us_per_order"] = float64(self.Microseconds()) / n
			if pg := env.pgCPU() - pg0; pg > 0 {
				out["pg_cpu_us_per_order"] = float64(pg.Microseconds()) / n
			}
		}
		return out, nil
	}
}

// orderPoster returns the function that places one order as token's user
// and returns its ID, with -http-client's client (the lean one by default:
// the load tool shares the cores with what it measures, and Go's client
// with a body marshalled per call cost ~90 µs an order), at most conns at
// once.
func orderPoster(env *Env, host, token string, conns int) (post func(ctx context.Context) (int64, error), closeFn func(), err error) {
	raw, err := json.Marshal(orderBody)
	if err != nil {
		return nil, nil, err
	}
	const path = "/api/v1/orders"
	decode := func(status int, body []byte) (int64, error) {
		if status/100 != 2 {
			return 0, fmt.Errorf("POST %s: %d %s", path, status, bytes.TrimSpace(body))
		}
		if id := leadingID(body); id > 0 {
			return id, nil
		}
		var o struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(body, &o); err != nil || o.ID == 0 {
			return 0, fmt.Errorf("POST %s: answer without an order ID: %q", path, body)
		}
		return o.ID, nil
	}
	switch env.P.HTTPClient {
	case "lean":
		c := newLeanClient(host, conns)
		req := newLeanRequest(host, path, token, raw)
		return func(ctx context.Context) (int64, error) {
			var id int64
			err := c.Do(ctx, req, func(status int, body []byte) (err error) {
				id, err = decode(status, body)
				return err
			})
			return id, err
		}, c.Close, nil
	case "net/http":
		c := httpClient(conns)
		return func(ctx context.Context) (int64, error) {
			var o struct {
				ID int64 `json:"id"`
			}
			_, err := call(ctx, c, http.MethodPost, "http://"+host+path, token, json.RawMessage(raw), &o)
			return o.ID, err
		}, c.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("-http-client %q: want lean or net/http", env.P.HTTPClient)
}

// leadingID reads the order ID from an answer that starts with it,
// {"id":123,…} as the api writes an order, without decoding the rest (which
// cost the load tool more than the request itself); 0 for any other
// answer, which is then decoded in full.
func leadingID(body []byte) int64 {
	rest, ok := bytes.CutPrefix(body, []byte(`{"id":`))
	if !ok {
		return 0
	}
	var id int64
	for i, c := range rest {
		switch {
		case c >= '0' && c <= '9' && i < 18:
			id = id*10 + int64(c-'0')
		case (c == ',' || c == '}') && i > 0:
			return id
		default:
			return 0
		}
	}
	return 0
}

// orderTables are the tables an orders run writes.
const orderTables = "orders, workflows, workflow_steps, workflow_edges, outbox, email_log"

// settleOrderTables vacuums and analyzes the tables an orders run (and a
// chord) writes, before the run, as pgbench vacuums its tables before each
// test: a run then pays for its own dead rows, not for the ~25,000 orders'
// worth the closed loop before it left to autovacuum, which otherwise ran
// during the next (open-loop) run and halved what it measured.
func settleOrderTables(ctx context.Context, env *Env) error {
	if _, err := env.DB.ExecContext(ctx, `VACUUM (ANALYZE) `+orderTables); err != nil {
		return fmt.Errorf("vacuum the order tables before the run: %w", err)
	}
	return nil
}

// orderDBConns reads -order-db-conns ("api,worker") as the two processes'
// DATABASE_MAX_CONNS settings; "" leaves both at their default.
func orderDBConns(v string) (api, worker []string, err error) {
	if v == "" {
		return nil, nil, nil
	}
	a, w, ok := strings.Cut(v, ",")
	an, aerr := strconv.Atoi(a)
	wn, werr := strconv.Atoi(w)
	if !ok || aerr != nil || werr != nil || an < 1 || wn < 1 {
		return nil, nil, fmt.Errorf("-order-db-conns %q: want two positive numbers, api,worker", v)
	}
	return []string{"DATABASE_MAX_CONNS=" + a}, []string{"DATABASE_MAX_CONNS=" + w}, nil
}

// newUser registers a fresh user with a proven address and logs in; it
// returns the access token.
func newUser(ctx context.Context, env *Env, base string) (string, error) {
	c := httpClient(1)
	email := fmt.Sprintf("loadgen-%d@example.com", time.Now().UnixNano())
	creds := map[string]string{"email": email, "password": "loadgen-password", "name": "Loadgen"}
	if _, err := call(ctx, c, http.MethodPost, base+"/auth/register", "", creds, nil); err != nil {
		return "", err
	}
	// As if the customer had followed the link in the welcome email: mail to
	// an unproven address is capped at UNVERIFIED_MAIL_MAX a day, which would
	// leave all but 3 orders without their confirmation.
	if _, err := env.DB.ExecContext(ctx, `UPDATE users SET email_verified_at = now() WHERE email = $1`, email); err != nil {
		return "", fmt.Errorf("verify the bench user: %w", err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if _, err := call(ctx, c, http.MethodPost, base+"/auth/login", "", map[string]string{"email": email, "password": "loadgen-password"}, &tok); err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// waitOrders waits until every order is completed and its confirmation
// email sent, then returns the created→processed and created→email-sent
// percentiles and the end-to-end completion rate.
func waitOrders(ctx context.Context, env *Env, ids []int64, timeout time.Duration) (Metrics, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("no order was accepted")
	}
	// Only orders not yet seen done are looked at again, each through its
	// keys, and a poll stops at the first chunk (oldest first) that is not
	// all done: orders finish roughly in the order they were placed, so the
	// whole wait reads each order about once. Looking at every pending order
	// on each poll cost PostgreSQL ~190 ms a poll at 10,000 orders, CPU taken
	// from the system under test while it drains.
	const q = `SELECT o.id, o.status, EXISTS (SELECT 1 FROM email_log e
		         WHERE e.dedup_key = 'order_confirmation:' || o.id AND e.sent_at IS NOT NULL)
		FROM orders o WHERE o.id = ANY($1)`
	const chunk = 500
	pending := slices.Clone(ids)
	slices.Sort(pending)
	deadline := time.Now().Add(timeout)
	for {
		var left []int64
		var failed int
		for start := 0; start < len(pending); start += chunk {
			part := pending[start:min(start+chunk, len(pending))]
			notDone, f, err := pollOrders(ctx, env, q, part)
			if err != nil {
				return nil, err
			}
			failed += f
			left = append(left, notDone...)
			if len(notDone) > 0 {
				left = append(left, pending[start+len(part):]...)
				break
			}
		}
		if failed > 0 {
			return nil, fmt.Errorf("%d of %d orders failed", failed, len(ids))
		}
		pending = left
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after %s: %d of %d orders not completed and mailed", timeout, len(pending), len(ids))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	rows, err := env.DB.QueryContext(ctx, `SELECT o.created_at, o.processed_at, e.sent_at
		FROM orders o JOIN email_log e ON e.dedup_key = 'order_confirmation:' || o.id WHERE o.id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var processed, mailed []float64
	var first, last time.Time
	for rows.Next() {
		var created, proc, sent time.Time
		if err := rows.Scan(&created, &proc, &sent); err != nil {
			return nil, err
		}
		processed = append(processed, ms(proc.Sub(created)))
		mailed = append(mailed, ms(sent.Sub(created)))
		if first.IsZero() || created.Before(first) {
			first = created
		}
		last = slices.MaxFunc([]time.Time{last, proc, sent}, time.Time.Compare)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Float64s(processed)
	sort.Float64s(mailed)
	return Metrics{
		"completed_per_s":   float64(len(ids)) / last.Sub(first).Seconds(),
		"processed_p50_ms":  percentile(processed, 50),
		"processed_p99_ms":  percentile(processed, 99),
		"email_sent_p50_ms": percentile(mailed, 50),
		"email_sent_p99_ms": percentile(mailed, 99),
		"orders":            float64(len(ids)),
	}, nil
}

// pollOrders returns those of ids not yet completed and mailed, in order,
// and how many failed.
func pollOrders(ctx context.Context, env *Env, q string, ids []int64) (notDone []int64, failed int, err error) {
	rows, err := env.DB.QueryContext(ctx, q, pq.Array(ids))
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var status string
		var sent bool
		if err := rows.Scan(&id, &status, &sent); err != nil {
			return nil, 0, err
		}
		switch {
		case status == "failed":
			failed++
		case status != "completed" || !sent:
			notDone = append(notDone, id)
		}
	}
	slices.Sort(notDone)
	return notDone, failed, rows.Err()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

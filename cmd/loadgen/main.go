// Command loadgen measures Conveyor against a running Redis and PostgreSQL,
// beside a raw asynq anchor in the same run, and prints medians, ratios, CPU
// per task and Redis memory.
//
// It starts nothing hidden. It is given the Redis and PostgreSQL URLs and the
// directory of the real built binaries (api, worker); each scenario starts
// those binaries itself as child processes (their logs go to -out), and the
// raw asynq anchor is this same executable re-run as `loadgen rawworker`, so
// its CPU is measured from /proc exactly like the worker's. Every scenario
// flushes the Redis database of -redis before each run: point it at a
// Redis used for nothing else (make bench-load starts its own).
//
//	loadgen -redis redis://127.0.0.1:56389/0 -db postgres://… -bin ./bin [-runs 3] [scenario…]
//
// Scenarios (all by default): worker, enqueue, orders, pickup, workflow, limits. See -list.
//
// # Adding a scenario
//
// A scenario is a value of type Scenario registered in scenarios() (one line
// in scenarios.go): a name, a one-line description and a Variants function
// that returns the cases to compare. Each Variant's Run performs one
// measurement and returns named figures (Metrics). The runner interleaves
// the variants over -runs rounds (v1 v2 v3, v1 v2 v3, …) so slow drifts of
// the machine hit every variant alike, then prints each figure's median and
// every Ratio the scenario declares (the median of the per-round ratios,
// e.g. Conveyor's tasks/s over raw asynq's in the same round). A scenario
// reads its knobs from Params (add a flag there if it needs a new one) and
// uses Env for the shared machinery: starting the binaries (Env.StartWorker,
// Env.StartAPI, Env.StartRaw), CPU of a child and of Redis, Redis memory,
// an HTTP client, a clean Redis database and the bench PostgreSQL.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == "rawworker" {
		return runRawWorker(ctx, args[2:], stdout)
	}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p Params
	p.register(fs)
	list := fs.Bool("list", false, "list the scenarios and exit")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	all := scenarios()
	if *list {
		for _, s := range all {
			fmt.Fprintf(stdout, "%-10s %s\n", s.Name, s.Help)
		}
		return nil
	}
	var chosen []Scenario
	if fs.NArg() == 0 {
		chosen = all
	}
	for _, name := range fs.Args() {
		s, ok := findScenario(all, name)
		if !ok {
			return fmt.Errorf("unknown scenario %q (see -list)", name)
		}
		chosen = append(chosen, s)
	}
	if p.RedisURL == "" || p.DatabaseURL == "" || p.BinDir == "" {
		return fmt.Errorf("-redis, -db and -bin are required")
	}

	env, err := newEnv(ctx, p, stderr)
	if err != nil {
		return err
	}
	defer env.Close()

	fmt.Fprintf(stdout, "# loadgen %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "command: %s\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "machine: %s\n", machineInfo(ctx, env))
	for _, s := range chosen {
		if err := runScenario(ctx, env, s, stdout); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}

func findScenario(all []Scenario, name string) (Scenario, bool) {
	for _, s := range all {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Scenario is one kind of measurement; see the package comment.
type Scenario struct {
	Name     string
	Help     string
	Variants func(p Params) []Variant
	// Ratios are printed after the medians: Metric of Num over Metric of Den,
	// computed per round, median over rounds.
	Ratios []Ratio
}

// Variant is one case of a scenario, measured once per round.
type Variant struct {
	Name string
	Run  func(ctx context.Context, env *Env) (Metrics, error)
}

// Ratio names two variants and a metric to compare.
type Ratio struct{ Metric, Num, Den string }

// Metrics are the named figures of one measurement. Names carry their unit
// (tasks_per_s, p99_ms, cpu_us_per_task, redis_mem_mb).
type Metrics map[string]float64

// errSkip reports a variant that cannot run here (an endpoint that does not
// exist yet, say); the runner prints the reason and goes on.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return "skipped: " + e.reason }

func runScenario(ctx context.Context, env *Env, s Scenario, w io.Writer) error {
	variants := s.Variants(env.P)
	results := make(map[string][]Metrics)
	skipped := map[string]string{}
	fmt.Fprintf(w, "\n## %s: %s\n", s.Name, s.Help)
	for round := 1; round <= env.P.Runs; round++ {
		for _, v := range variants {
			if _, ok := skipped[v.Name]; ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := v.Run(ctx, env)
			var skip errSkip
			if asSkip(err, &skip) {
				skipped[v.Name] = skip.reason
				fmt.Fprintf(w, "  %-28s skipped: %s\n", v.Name, skip.reason)
				continue
			}
			if err != nil {
				return fmt.Errorf("%s round %d: %w", v.Name, round, err)
			}
			results[v.Name] = append(results[v.Name], m)
			fmt.Fprintf(w, "  round %d %-22s %s\n", round, v.Name, formatMetrics(m))
		}
	}
	fmt.Fprintf(w, "medians of %d rounds:\n", env.P.Runs)
	for _, v := range variants {
		ms := results[v.Name]
		if len(ms) == 0 {
			continue
		}
		med := Metrics{}
		for k := range ms[0] {
			med[k] = median(column(ms, k))
		}
		fmt.Fprintf(w, "  %-30s %s\n", v.Name, formatMetrics(med))
	}
	for _, r := range s.Ratios {
		num, den := results[r.Num], results[r.Den]
		n := min(len(num), len(den))
		if n == 0 {
			continue
		}
		var rs []float64
		for i := range n {
			if d := den[i][r.Metric]; d != 0 {
				rs = append(rs, num[i][r.Metric]/d)
			}
		}
		if len(rs) > 0 {
			fmt.Fprintf(w, "  ratio %s: %s / %s = %.2fx (median of %d rounds; per round %s)\n",
				r.Metric, r.Num, r.Den, median(rs), len(rs), formatFloats(rs))
		}
	}
	return nil
}

func asSkip(err error, target *errSkip) bool {
	if err == nil {
		return false
	}
	s, ok := err.(errSkip)
	if ok {
		*target = s
	}
	return ok
}

func column(ms []Metrics, k string) []float64 {
	out := make([]float64, 0, len(ms))
	for _, m := range ms {
		if v, ok := m[k]; ok {
			out = append(out, v)
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile of sorted xs (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted)) + 0.5)
	i = max(1, min(i, len(sorted)))
	return sorted[i-1]
}

func formatMetrics(m Metrics) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + formatFloat(m[k])
	}
	return strings.Join(parts, " ")
}

func formatFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

func formatFloat(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// machineInfo is the line that says where the figures come from.
func machineInfo(ctx context.Context, env *Env) string {
	cpu := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, cpu, _ = strings.Cut(line, ":")
				cpu = strings.TrimSpace(cpu)
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%d cpus (%s), %s, %s/%s; redis %s; %s; load avg %s",
		runtime.NumCPU(), cpu, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		env.redisVersion(ctx), env.pgInfo(ctx), load)
}

package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
	"github.com/redis/go-redis/v9"
)

// Params are the knobs of every scenario, one flag each.
type Params struct {
	RedisURL    string
	DatabaseURL string
	BinDir      string
	OutDir      string
	Runs        int

	Tasks             int           // worker: pre-filled tasks
	Concurrency       int           // worker: WORKER_CONCURRENCY of the real and the raw worker
	Duration          time.Duration // enqueue, orders: length of each closed-loop run
	Conns             int           // enqueue, orders: HTTP connections
	ClientGoroutines  int           // enqueue: goroutines of the asynq client anchor
	BatchSize         int           // enqueue: tasks per batch request
	Rate              int           // orders: open-loop arrivals per second
	RateDuration      time.Duration // orders: length of the open-loop run
	RateWarmup        time.Duration // orders: open-loop arrivals before the measured run
	OrderWorkers      int           // orders: WORKER_CONCURRENCY of the worker
	OrderDBConns      string        // orders: DATABASE_MAX_CONNS of the api and the worker ("api,worker")
	PickupRate        int           // pickup: tasks per second
	PickupDuration    time.Duration // pickup: length of each run
	IdleWindow        time.Duration // pickup: idle CPU measurement window
	PollIntervals     string        // pickup: WORKER_POLL_INTERVAL values to compare
	CompletionTimeout time.Duration // orders: how long to wait for every order to finish
	PGPid             int           // orders: PostgreSQL postmaster, for its CPU per order
	ChainLength       int           // workflow: steps of the chain
	GroupSize         int           // workflow: steps of the chord (group + callback) and plain pings
	ProfileDir        string        // enqueue, worker, orders, workflow: where to write CPU profiles of the api or worker ("": none)
	HTTPClient        string        // enqueue, orders: "lean" or "net/http"
	ProfileSpan       time.Duration // worker: length of the worker's CPU profile
	APIEnv            string        // extra KEY=value,… for every api started (experiments)
	WorkerEnv         string        // extra KEY=value,… for every worker started (experiments)
}

func (p *Params) register(fs *flag.FlagSet) {
	fs.StringVar(&p.RedisURL, "redis", "", "Redis URL; its database is flushed before each run (required)")
	fs.StringVar(&p.DatabaseURL, "db", "", "PostgreSQL URL of a migrated or empty database (required)")
	fs.StringVar(&p.BinDir, "bin", "", "directory holding the built api and worker binaries (required)")
	fs.StringVar(&p.OutDir, "out", "", "directory for the child processes' logs (default: a temporary directory)")
	fs.IntVar(&p.Runs, "runs", 3, "rounds; each variant runs once per round, interleaved")
	fs.IntVar(&p.Tasks, "tasks", 50000, "worker: tasks pre-filled before the worker starts")
	fs.IntVar(&p.Concurrency, "concurrency", 100, "worker: concurrency of the real and the raw worker")
	fs.DurationVar(&p.Duration, "duration", 10*time.Second, "enqueue, orders: length of a closed-loop run")
	fs.IntVar(&p.Conns, "conns", 50, "enqueue, orders: concurrent HTTP connections")
	fs.IntVar(&p.ClientGoroutines, "client-goroutines", 8, "enqueue: goroutines of the asynq client anchor")
	fs.IntVar(&p.BatchSize, "batch", 100, "enqueue: tasks per POST /api/v1/tasks/batch")
	fs.IntVar(&p.Rate, "rate", 500, "orders: open-loop arrival rate (orders/s)")
	fs.DurationVar(&p.RateDuration, "rate-duration", 10*time.Second, "orders: length of the open-loop run")
	fs.DurationVar(&p.RateWarmup, "rate-warmup", 2*time.Second, "orders: open-loop arrivals at -rate before the measured -rate-duration (reported apart as warmup_*)")
	fs.IntVar(&p.OrderWorkers, "order-workers", 50, "orders: WORKER_CONCURRENCY of the worker")
	fs.StringVar(&p.OrderDBConns, "order-db-conns", "", `orders: DATABASE_MAX_CONNS of the api and the worker, "api,worker" (default: the binaries' default)`)
	fs.IntVar(&p.PickupRate, "pickup-rate", 20, "pickup: tasks per second into an idle worker")
	fs.DurationVar(&p.PickupDuration, "pickup-duration", 10*time.Second, "pickup: length of a run")
	fs.DurationVar(&p.IdleWindow, "idle", 10*time.Second, "pickup: window over which idle CPU is measured")
	fs.StringVar(&p.PollIntervals, "poll-intervals", "1s,20ms,5ms", "pickup: WORKER_POLL_INTERVAL values to compare (comma-separated)")
	fs.DurationVar(&p.CompletionTimeout, "completion-timeout", 3*time.Minute, "orders: how long to wait for every order to be completed and mailed")
	fs.IntVar(&p.ChainLength, "chain-length", 100, "workflow: system:ping steps of the chain")
	fs.IntVar(&p.GroupSize, "group-size", 10000, "workflow: steps of the chord (group of N-1 pings + 1 callback), and plain pings to compare")
	fs.StringVar(&p.ProfileDir, "profile", "", "enqueue, worker, orders, workflow: directory for a CPU profile of the api per HTTP run, of the worker per drain, of both per orders run and per chord (from their /debug/pprof/ side ports)")
	fs.DurationVar(&p.ProfileSpan, "profile-span", 3*time.Second, "worker, workflow: with -profile, how long the worker is profiled from its first dequeue (keep it within the drain)")
	fs.StringVar(&p.APIEnv, "api-env", "", "extra environment for every api started, KEY=value[,KEY=value…] (after the scenario's own, so it wins): to try a setting such as GOGC=400")
	fs.StringVar(&p.WorkerEnv, "worker-env", "", "extra environment for every worker started, KEY=value[,KEY=value…] (after the scenario's own, so it wins)")
	fs.StringVar(&p.HTTPClient, "http-client", "lean", "enqueue, orders: HTTP client of the load generator: lean (keep-alive HTTP/1.1 client of loadgen's own, as wrk) or net/http (Go's)")
	fs.IntVar(&p.PGPid, "pg-pid", 0, "orders: pid of the bench PostgreSQL postmaster, to report its CPU per order")
}

// Env is what the scenarios share: connections to the bench Redis and
// PostgreSQL and the means to start the binaries under test.
type Env struct {
	P      Params
	Log    io.Writer
	Redis  *redis.Client
	RedisO asynq.RedisConnOpt
	DB     *sqlx.DB
	smtp   *smtpSink
	outDir string
	seq    int
}

func newEnv(ctx context.Context, p Params, log io.Writer) (*Env, error) {
	ropt, err := redis.ParseURL(p.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	aopt, err := asynq.ParseRedisURI(p.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	rc := redis.NewClient(ropt)
	if err := rc.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	d, err := sqlx.Open("postgres", p.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("-db: %w", err)
	}
	if err := d.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("-db: %w", err)
	}
	out := p.OutDir
	if out == "" {
		if out, err = os.MkdirTemp("", "loadgen-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	sink, err := startSMTPSink()
	if err != nil {
		return nil, err
	}
	e := &Env{P: p, Log: log, Redis: rc, RedisO: aopt, DB: d, smtp: sink, outDir: out}
	fmt.Fprintf(log, "loadgen: child logs in %s\n", out)
	// The binaries migrate the bench database once, as an operator would.
	if err := e.migrate(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close releases the connections and the SMTP sink.
func (e *Env) Close() {
	e.smtp.Close()
	e.DB.Close()
	e.Redis.Close()
}

func (e *Env) bin(name string) string { return filepath.Join(e.P.BinDir, name) }

func (e *Env) migrate(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, e.bin("api"), "migrate")
	cmd.Env = []string{"DATABASE_URL=" + e.P.DatabaseURL, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("api migrate: %w\n%s", err, out)
	}
	return nil
}

// FlushRedis empties the bench Redis database, so each run starts clean
// and its memory figure is its own.
func (e *Env) FlushRedis(ctx context.Context) error {
	return e.Redis.FlushDB(ctx).Err()
}

// Proc is a child process under measurement.
type Proc struct {
	Name string
	Addr string // the HTTP address it serves (side port or API), if any
	Side string // the side port of the api or worker (METRICS_ADDR: /debug/pprof/), if any
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

// Pid of the child.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// CPU is the user+system time the child has used so far, from /proc.
func (p *Proc) CPU() time.Duration { return procCPU(p.Pid()) }

// Stop sends SIGTERM and waits for the child to exit.
func (p *Proc) Stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.log.Close()
		return err
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.log.Close()
		return fmt.Errorf("%s did not stop within 60s; killed", p.Name)
	}
}

// start runs bin with args and env (nothing inherited but PATH), its output
// in a log file, and waits until ready reports nil.
func (e *Env) start(ctx context.Context, name, bin string, args, env []string, addr string, ready func(context.Context, *Proc) error) (*Proc, error) {
	e.seq++
	logPath := filepath.Join(e.outDir, fmt.Sprintf("%03d-%s.log", e.seq, name))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stderr = f
	cmd.Stdout = f
	p := &Proc{Name: name, Addr: addr, cmd: cmd, done: make(chan error, 1), log: f}
	var stdout io.ReadCloser
	if ready == nil {
		// The raw worker prints "ready" on stdout once its server runs.
		cmd.Stdout = nil
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.done <- cmd.Wait() }()
	fmt.Fprintf(e.Log, "loadgen: started %s (pid %d): %s %s\n", name, p.Pid(), bin, strings.Join(args, " "))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if ready == nil {
		lines := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				fmt.Fprintln(f, sc.Text())
				if sc.Text() == "ready" {
					lines <- nil
					_, _ = io.Copy(f, stdout)
					return
				}
			}
			lines <- fmt.Errorf("%s exited before it was ready (see %s)", name, logPath)
		}()
		select {
		case err = <-lines:
		case <-wctx.Done():
			err = fmt.Errorf("%s not ready within 30s (see %s)", name, logPath)
		}
	} else {
		err = ready(wctx, p)
	}
	if err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(url string) func(context.Context, *Proc) error {
	return func(ctx context.Context, p *Proc) error {
		for {
			resp, err := http.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
			select {
			case err := <-p.done:
				p.done <- err
				return fmt.Errorf("%s exited: %v (see its log)", p.Name, err)
			case <-ctx.Done():
				return fmt.Errorf("%s: %s not ready: %v", p.Name, url, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// StartWorker runs the real worker binary with extra environment (KEY=value)
// on top of the bench URLs; it is ready when its /healthz answers.
func (e *Env) StartWorker(ctx context.Context, extra ...string) (*Proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := append([]string{
		"DATABASE_URL=" + e.P.DatabaseURL, "REDIS_URL=" + e.P.RedisURL, "METRICS_ADDR=" + addr,
		"SMTP_URL=" + e.smtp.URL(),
	}, extra...)
	if e.P.WorkerEnv != "" {
		env = append(env, strings.Split(e.P.WorkerEnv, ",")...)
	}
	p, err := e.start(ctx, "worker", e.bin("worker"), nil, env, addr, waitHTTP("http://"+addr+"/healthz"))
	if p != nil {
		p.Side = addr
	}
	return p, err
}

// APIToken is the admin token the api is started with.
const APIToken = "loadgen-admin-token-0123456789"

// StartAPI runs the real api binary; it is ready when /readyz answers.
func (e *Env) StartAPI(ctx context.Context, extra ...string) (*Proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	side, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := append([]string{
		"DATABASE_URL=" + e.P.DatabaseURL, "REDIS_URL=" + e.P.RedisURL, "HTTP_ADDR=" + addr, "METRICS_ADDR=" + side,
		"API_TOKEN=" + APIToken, "JWT_SECRET=loadgen-jwt-secret-0123456789abcdef0123",
		// One user places every order: the login limiter must not refuse the bench.
		"LOGIN_MAX_FAILURES=1000",
	}, extra...)
	if e.P.APIEnv != "" {
		env = append(env, strings.Split(e.P.APIEnv, ",")...)
	}
	p, err := e.start(ctx, "api", e.bin("api"), nil, env, addr, waitHTTP("http://"+addr+"/readyz"))
	if p != nil {
		p.Side = side
	}
	return p, err
}

// StartRaw runs the raw asynq anchor (this executable as `loadgen
// rawworker`) with a no-op handler, or one that writes a result.
func (e *Env) StartRaw(ctx context.Context, args ...string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args = append([]string{"rawworker", "-redis", e.P.RedisURL}, args...)
	return e.start(ctx, "asynq-raw", self, args, nil, "", nil)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procCPU reads utime+stime of pid from /proc/<pid>/stat (clock ticks of
// 1/100 s on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procPeakRSSMB is the largest resident set pid has had (VmHWM, in MB).
func procPeakRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// RedisCPU is the CPU Redis has used so far (INFO cpu: used_cpu_sys +
// used_cpu_user, microsecond resolution).
func (e *Env) RedisCPU(ctx context.Context) time.Duration {
	info := e.info(ctx, "cpu")
	var total float64
	for _, k := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, _ := strconv.ParseFloat(info[k], 64)
		total += v
	}
	return time.Duration(total * float64(time.Second))
}

// RedisMemoryMB is Redis's used_memory in MB.
func (e *Env) RedisMemoryMB(ctx context.Context) float64 {
	v, _ := strconv.ParseFloat(e.info(ctx, "memory")["used_memory"], 64)
	return v / 1e6
}

func (e *Env) info(ctx context.Context, section string) map[string]string {
	out := map[string]string{}
	s, err := e.Redis.Info(ctx, section).Result()
	if err != nil {
		return out
	}
	for _, line := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// RedisCalls is how many commands Redis has run so far (INFO commandstats,
// summed over commands; EVALSHA counts once, whatever its script does).
func (e *Env) RedisCalls(ctx context.Context) int64 {
	var n int64
	for k, v := range e.info(ctx, "commandstats") {
		if !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		c, _ := strconv.ParseInt(calls, 10, 64)
		n += c
	}
	return n
}

func (e *Env) redisVersion(ctx context.Context) string {
	return e.info(ctx, "server")["redis_version"]
}

func (e *Env) pgInfo(ctx context.Context) string {
	var version, fsync, sc string
	_ = e.DB.GetContext(ctx, &version, "SHOW server_version")
	_ = e.DB.GetContext(ctx, &fsync, "SHOW fsync")
	_ = e.DB.GetContext(ctx, &sc, "SHOW synchronous_commit")
	return fmt.Sprintf("postgres %s (fsync=%s, synchronous_commit=%s)", version, fsync, sc)
}

// cpuMeter measures the CPU of some children and of Redis over a window.
type cpuMeter struct {
	env        *Env
	procs      []*Proc
	start      time.Time
	proc0, rd0 time.Duration
}

func (e *Env) meter(ctx context.Context, procs ...*Proc) *cpuMeter {
	m := &cpuMeter{env: e, procs: procs}
	m.proc0, m.rd0, m.start = m.procCPU(), e.RedisCPU(ctx), time.Now()
	return m
}

func (m *cpuMeter) procCPU() time.Duration {
	var t time.Duration
	for _, p := range m.procs {
		t += p.CPU()
	}
	return t
}

// read returns the children's and Redis's CPU and the wall time since the meter started.
func (m *cpuMeter) read(ctx context.Context) (proc, rd, wall time.Duration) {
	return m.procCPU() - m.proc0, m.env.RedisCPU(ctx) - m.rd0, time.Since(m.start)
}

// pgCPU is the CPU used so far by the bench PostgreSQL (-pg-pid: its
// postmaster) and its current child processes; 0 without -pg-pid. Backends
// that exited during the window are not counted, so this is a lower bound.
func (e *Env) pgCPU() time.Duration {
	if e.P.PGPid == 0 {
		return 0
	}
	total := procCPU(e.P.PGPid)
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(e.P.PGPid) {
			total += procCPU(pid)
		}
	}
	return total
}

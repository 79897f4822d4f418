// Command api serves Conveyor's HTTP API: task endpoints, queue statistics,
// health and readiness. `api migrate` applies database migrations and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

const usage = `usage: api [serve|migrate|createuser|createkey|hashpassword|outbox]

  serve       run the HTTP API and the outbox relay (default)
  migrate     apply database migrations and exit
  createuser  --email E --name N [--admin] [--password-env VAR]: create a user
              (the password is read from stdin unless --password-env names a variable)
  createkey   --name NAME: create an API key (printed once; acts as admin)
  hashpassword [--password-env VAR]: print the bcrypt hash of a password read
              from stdin, for MONITOR_USERS (name:hash[:ro])
  outbox dead [--limit N]: list outbox rows that could never become a task, with why
  outbox requeue (--id ID | --all): make dead outbox rows due again (after the fix)`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	if cmd == "createuser" || cmd == "createkey" {
		return runAdmin(ctx, cmd, args[2:], getenv, os.Stdin, stdout)
	}
	if cmd == "outbox" {
		return runOutbox(ctx, args[2:], getenv, stdout)
	}
	if cmd == "hashpassword" {
		return runHashPassword(args[2:], getenv, os.Stdin, stdout)
	}
	switch cmd {
	case "serve", "migrate":
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}

	role := config.RoleAPI
	if cmd == "migrate" {
		role = config.RoleMigrate
	}
	cfg, err := config.Load(getenv, role)
	if err != nil {
		return err
	}
	// A line per request: written in batches every 50 ms (warnings and
	// errors at once), as the worker's per-task lines, see observe.LogBuffer.
	log, logBuf := observe.NewBufferedLogger(stderr, cfg.LogFormat, cfg.LogLevel, 50*time.Millisecond)
	defer logBuf.Close()
	log = log.With("service", "api")
	if cfg.GCPercent > 0 { // GOGC unset: config.DefaultGCPercent
		debug.SetGCPercent(cfg.GCPercent)
	}

	database, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer database.Close()
	db.SetPoolSize(database, cfg.DatabaseMaxConns)

	if cmd == "migrate" || cfg.AutoMigrate {
		n, err := db.Migrate(ctx, database.DB)
		if err != nil {
			return err
		}
		log.Info("migrations applied", "count", n)
		if cmd == "migrate" {
			fmt.Fprintf(stdout, "migrations applied: %d\n", n)
			return nil
		}
	}

	rc := queue.RedisConfig{URL: cfg.RedisURL, ClusterAddrs: cfg.RedisClusterAddrs, ClusterPassword: cfg.RedisClusterPassword}
	q, err := queue.NewClientFor(rc, tasks.All(), cfg.Queues)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := queue.RequireNoEviction(ctx, q.Redis(), log); err != nil {
		return err
	}
	q.SetDefaultRetention(cfg.TaskRetention)

	// Queue statistics are exported by the api only: one kind of process,
	// so the numbers are not repeated by every worker.
	reg := observe.NewRegistry()
	outbox := store.NewOutbox(database)
	reg.MustRegister(observe.NewQueueCollector(q.QueueSnapshots, func(ctx context.Context) (observe.OutboxSnapshot, error) {
		s, err := outbox.Stats(ctx)
		return observe.OutboxSnapshot{Pending: s.Pending, Oldest: time.Duration(s.OldestSeconds * float64(time.Second)), Dead: s.Dead}, err
	}, log))

	var monitor *httpapi.Monitor
	if len(cfg.MonitorUsers) > 0 {
		opts := queue.MonitorOptions{RootPath: httpapi.MonitorPath, PrometheusURL: cfg.PrometheusURL}
		rw, err := queue.NewMonitorFor(rc, opts)
		if err != nil {
			return err
		}
		defer rw.Close()
		opts.ReadOnly = true
		ro, err := queue.NewMonitorFor(rc, opts)
		if err != nil {
			return err
		}
		defer ro.Close()
		monitor = &httpapi.Monitor{ReadWrite: rw, ReadOnly: ro, Ping: q.Ping}
	} else {
		log.Info("MONITOR_USERS is empty: the dashboard at /monitoring/ is off")
	}

	secret := cfg.JWTSecret
	if secret == nil {
		secret = auth.RandomSecret(32)
		log.Warn("DEV_MODE and no JWT_SECRET: using a random per-process secret; tokens end with the process and other replicas reject them")
	}
	tokens := auth.NewTokens(secret, cfg.JWTTTL)
	// Login limits are counted in Redis, so they hold across api replicas.
	limiter := auth.NewRedisLimiter(q.Redis(), cfg.LoginMaxFailures, cfg.LoginWindow)
	limiter.OnError = func(err error) {
		log.Warn("login limiter: Redis unavailable, counting in this process", "err", err)
	}
	guard := auth.NewGuard(q.Redis(), cfg.Abuse, limiter.OnError)

	// Requests hand the outbox rows they wrote to the dispatcher once their
	// transaction has committed; the relay's poll sends whatever it did not.
	// Orders hand over one outbox row per request: gather them when busy
	// (queue.DispatcherOptions.Linger).
	dispatcher := queue.NewDispatcher(database, q, log, queue.DispatcherOptions{Metrics: observe.NewDispatchMetrics(reg),
		Linger: 2 * time.Millisecond, LingerBelow: 64, Busy: 5 * time.Millisecond})

	handler := httpapi.NewServer(httpapi.Options{APIToken: cfg.APIToken, CORSAllowedOrigins: cfg.CORSAllowedOrigins, BodyLimit: cfg.BodyLimit, MonitorUsers: cfg.MonitorUsers,
		TrustedProxies: cfg.TrustedProxies, TaskIDSecret: auth.DeriveKey(secret, "idempotency task id")},
		httpapi.Deps{Log: log, DB: database, Queue: q, Dispatcher: dispatcher, Tokens: tokens, Limiter: limiter, Guard: guard, Verifier: auth.NewEmailVerifier(secret), Metrics: reg, Monitor: monitor,
			Schedules: schedule.NewCatalog(database, q.Redis(), q, tasks.All(), cfg.Queues)})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // long-polling task lookups stay within this
		IdleTimeout:       2 * time.Minute,
	}
	// The outbox dispatcher and relay run beside the server and stop after
	// it, so the last requests' rows are still dispatched (deferred before
	// the database and Redis are closed).
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	var outboxDone sync.WaitGroup
	outboxDone.Go(func() { _ = dispatcher.Run(relayCtx) })
	// The relay leaves a row to its producer's dispatcher for a second
	// (RelayOptions.Grace): it takes what no dispatcher sent, 1–2 s after
	// its commit, instead of racing the dispatchers for every fresh row.
	outboxDone.Go(func() {
		_ = queue.NewRelay(database, q, log, queue.RelayOptions{Grace: time.Second}).Run(relayCtx)
	})
	defer func() { stopRelay(); outboxDone.Wait() }()

	// The side port (METRICS_ADDR, optional for the api) carries the
	// profiler, which must never be on the public listener.
	if cfg.MetricsAddr != "" {
		side, err := observe.ListenSide(cfg.MetricsAddr, reg, func(ctx context.Context) error { return database.PingContext(ctx) })
		if err != nil {
			return err
		}
		go func() {
			if err := side.Serve(); err != nil {
				log.Error("side server", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = side.Shutdown(sctx) // a running profile may outlast it; the process ends anyway
		}()
		log.Info("side port listening", "addr", side.Addr())
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("api listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

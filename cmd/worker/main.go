// Command worker runs tasks: one asynq server whose handlers come only from
// the tasks registry, with weighted queues, per-type retry backoff and
// timeouts, graceful shutdown, and /healthz and /metrics on METRICS_ADDR.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/workflow"
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

func run(ctx context.Context, _ []string, getenv func(string) string, _, stderr io.Writer) error {
	cfg, err := config.Load(getenv, config.RoleWorker)
	if err != nil {
		return err
	}
	// A line per task attempt: written in batches every 50 ms (warnings and
	// errors at once), see observe.LogBuffer.
	log, logBuf := observe.NewBufferedLogger(stderr, cfg.LogFormat, cfg.LogLevel, 50*time.Millisecond)
	defer logBuf.Close()
	log = log.With("service", "worker")
	if cfg.GCPercent > 0 { // GOGC unset: config.DefaultGCPercent
		debug.SetGCPercent(cfg.GCPercent)
	}

	redisOpt, err := queue.RedisConfig{URL: cfg.RedisURL, ClusterAddrs: cfg.RedisClusterAddrs, ClusterPassword: cfg.RedisClusterPassword}.ConnOpt()
	if err != nil {
		return err
	}
	database, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer database.Close()
	db.SetPoolSize(database, cfg.DatabaseMaxConns)

	templates, err := mail.LoadTemplates()
	if err != nil {
		return err
	}
	var mailer mail.Mailer = mail.Log{Logger: log}
	if cfg.SMTPURL != "" {
		if mailer, err = mail.NewSMTP(cfg.SMTPURL, cfg.SMTPFrom); err != nil {
			return err
		}
	} else {
		log.Warn("SMTP_URL is empty: emails are logged, not sent")
	}

	reg := observe.NewRegistry()
	metrics := observe.NewTaskMetrics(reg)
	wfMetrics := observe.NewWorkflowMetrics(reg)
	registry := tasks.All()
	// The queue client: the workflow reconciler asks asynq about steps whose
	// outcome was never recorded (a worker died between a task's end and the
	// advancement), and the dispatcher sends the steps this worker enqueues
	// (a workflow's next steps) right after their transaction commits; the
	// api's relay polls for whatever it does not send.
	q, err := queue.NewClientFor(queue.RedisConfig{URL: cfg.RedisURL, ClusterAddrs: cfg.RedisClusterAddrs,
		ClusterPassword: cfg.RedisClusterPassword}, registry, cfg.Queues)
	if err != nil {
		return err
	}
	defer q.Close()
	dispatcher := queue.NewDispatcher(database, q, log, queue.DispatcherOptions{Metrics: observe.NewDispatchMetrics(reg)})
	dctx, stopDispatcher := context.WithCancel(context.Background())
	var dispatcherDone sync.WaitGroup
	dispatcherDone.Go(func() { _ = dispatcher.Run(dctx) })
	// After srv.Shutdown: the last tasks' children are still dispatched.
	defer func() { stopDispatcher(); dispatcherDone.Wait() }()

	mux := tasks.NewMux(registry, tasks.Deps{
		DB: database, Mailer: mailer, Templates: templates, Log: log, CleanupMaxAge: cfg.CleanupMaxAge, OrderProcessDelay: cfg.OrderProcessDelay,
		VerifyLinkFunc: verifyLinks(cfg, log),
		UnverifiedMail: tasks.Limit{Max: cfg.Mail.UnverifiedMax, Window: cfg.Mail.UnverifiedWindow},
		Workflows:      workflow.NewAdvancer(database, dispatcher, wfMetrics, log),
	}, metrics)
	closeLimits, err := startLimits(ctx, redisOpt, registry, log, reg, mux)
	if err != nil {
		return err
	}
	defer closeLimits() // after srv.Shutdown: draining tasks still free their slots

	reconciler := workflow.NewReconciler(database, q, wfMetrics, log, workflow.ReconcilerOptions{
		Every: cfg.WorkflowReconcileInterval, Age: cfg.WorkflowReconcileAge, StuckAfter: cfg.WorkflowStuckAfter,
		Dispatch: dispatcher})
	rctx, stopReconciler := context.WithCancel(context.Background())
	defer stopReconciler()
	go reconciler.Run(rctx)

	// The asynq server's own Redis client: with wake-ups, its hook turns the
	// processor's polling into waiting (queue.Wakeups).
	srvRedis, err := queue.RedisClient(redisOpt)
	if err != nil {
		return err
	}
	defer srvRedis.Close() // after srv.Shutdown (deferred later, so run earlier)
	checkInterval := cfg.PollInterval
	if cfg.Wakeups {
		wakeups := queue.NewWakeups(srvRedis, cfg.Queues, queue.WakeOptions{MaxWait: cfg.PollInterval}, log)
		wakeups.Start(ctx)
		defer wakeups.Close()
		reg.MustRegister(wakeups.Collector())
		checkInterval = queue.WakeSleep
	}

	var redisHealth atomic.Pointer[error] // asynq's last Redis health check, read by /healthz
	srv := asynq.NewServerFromRedisClient(srvRedis, asynq.Config{
		Concurrency:    cfg.Concurrency,
		Queues:         cfg.Queues,
		StrictPriority: cfg.StrictPriority,
		RetryDelayFunc: tasks.ThrottleAware(registry.RetryDelay(cfg.RetryBase, cfg.RetryMax, rand.Float64)),
		IsFailure:      tasks.IsFailure, // a throttled attempt, or a step outcome not recorded, spends no retry
		// Handlers get their own base context, not the signal one: on SIGTERM
		// in-flight tasks keep running until ShutdownTimeout.
		BaseContext:              context.Background,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: time.Second,
		TaskCheckInterval:        checkInterval,
		Logger:                   asynqLogger{log.With("component", "asynq")},
		LogLevel:                 asynqLevel(cfg.LogLevel),
		HealthCheckInterval:      5 * time.Second,
		HealthCheckFunc:          func(err error) { redisHealth.Store(&err) },
	})

	// Crash recovery in seconds: heartbeats, and a reaper that puts a dead
	// worker's tasks back (queue.Liveness).
	rdb, err := queue.RedisClient(redisOpt)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := queue.RequireNoEviction(ctx, rdb, log); err != nil {
		return err
	}
	liveness := queue.NewLiveness(rdb, log, reg, queue.LivenessOptions{DeadAfter: cfg.DeadAfter})
	if err := liveness.Start(ctx); err != nil {
		return err
	}
	defer liveness.Stop(context.Background()) // after srv.Shutdown: running tasks keep their claims

	side, err := observe.ListenSide(cfg.MetricsAddr, reg, func(ctx context.Context) error {
		if p := redisHealth.Load(); p != nil && *p != nil {
			return fmt.Errorf("redis: %w", *p)
		}
		if err := database.PingContext(ctx); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	go func() {
		if err := side.Serve(); err != nil {
			log.Error("metrics server", "err", err)
		}
	}()

	if err := srv.Start(tasks.PresizedStack(liveness.Middleware(mux))); err != nil {
		side.Shutdown(context.Background())
		return fmt.Errorf("start worker: %w", err)
	}
	log.Info("worker started", "queues", cfg.Queues, "concurrency", cfg.Concurrency,
		"metrics_addr", side.Addr(), "task_types", registry.Names())

	<-ctx.Done()
	log.Info("shutting down: no new tasks; waiting for running ones", "timeout", cfg.ShutdownTimeout)
	srv.Shutdown() // waits up to ShutdownTimeout, then puts unfinished tasks back
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := side.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("metrics server shutdown: %w", err)
	}
	log.Info("worker stopped")
	return nil
}

// asynqLogger routes asynq's own logs into slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }

// Fatal is called by asynq only for unrecoverable states; exit as it expects.
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)); os.Exit(1) }

func asynqLevel(level string) asynq.LogLevel {
	switch level {
	case "debug":
		return asynq.DebugLevel
	case "warn":
		return asynq.WarnLevel
	case "error":
		return asynq.ErrorLevel
	default:
		return asynq.InfoLevel
	}
}

// verifyLinks makes the links of welcome emails that prove an address,
// signed with a key derived from JWT_SECRET (the api checks them with the
// same). Without JWT_SECRET the emails carry no link, and users who sign up
// can only be verified by an operator.
func verifyLinks(cfg config.Config, log *slog.Logger) func(int64, string) string {
	if cfg.JWTSecret == nil {
		log.Warn("JWT_SECRET is not set on the worker: welcome emails carry no verification link, so new users get order notices instead of confirmations")
		return nil
	}
	v := auth.NewEmailVerifier(cfg.JWTSecret)
	return func(id int64, email string) string {
		return cfg.Mail.PublicURL + "/api/v1/auth/verify-email?token=" + url.QueryEscape(v.Token(id, email))
	}
}

// Command scheduler is the beat: it fires the cron entries of SCHEDULES_FILE
// and of the schedules table as tasks, each tick under the task ID
// schedule:<name>:<tick unix seconds> so a tick is enqueued once however
// often it is attempted.
//
// Run as many replicas as you like: they elect a leader through a Redis
// lease (SCHEDULER_LEASE_TTL) and only the leader fires. Database schedules
// are re-read every SCHEDULE_SYNC_INTERVAL and at once on a PostgreSQL
// notification; SIGHUP reloads the file. After a failover or restart,
// ticks missed within SCHEDULER_CATCHUP_WINDOW are fired once.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/db"
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

func run(ctx context.Context, _ []string, getenv func(string) string, _, stderr io.Writer) error {
	cfg, err := config.Load(getenv, config.RoleScheduler)
	if err != nil {
		return err
	}
	id := cfg.SchedulerID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log := observe.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel).With("service", "scheduler")
	registry := tasks.All()

	var fileEntries []*schedule.Entry
	if cfg.SchedulesFile != "" {
		if fileEntries, err = schedule.LoadFile(cfg.SchedulesFile, registry); err != nil {
			return err
		}
	} else {
		log.Warn("SCHEDULES_FILE is empty: no file schedules")
	}

	database, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer database.Close()
	rows := store.NewSchedules(database)

	q, err := queue.NewClientFor(queue.RedisConfig{URL: cfg.RedisURL, ClusterAddrs: cfg.RedisClusterAddrs, ClusterPassword: cfg.RedisClusterPassword}, registry, cfg.Queues)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := queue.RequireNoEviction(ctx, q.Redis(), log); err != nil {
		return err
	}
	q.SetDefaultRetention(cfg.TaskRetention)

	lease := schedule.NewLease(q.Redis(), id, cfg.LeaseTTL, log)
	log = log.With("scheduler_id", lease.ID())
	state := schedule.NewState(q.Redis())
	reg := observe.NewRegistry()
	metrics := observe.NewScheduleMetrics(reg, lease.IsLeader)
	engine := schedule.NewEngine(q, log, schedule.EngineOptions{
		Leader: lease, State: state, Recorder: rows, Observer: metrics, CatchupWindow: cfg.CatchupWindow,
	})
	syncer := schedule.NewSyncer(rows.List, registry, engine, log, metrics)
	if err := syncer.Start(ctx, fileEntries); err != nil {
		return err
	}
	if err := state.PublishFile(ctx, fileEntries); err != nil {
		return err
	}

	side, err := observe.ListenSide(cfg.MetricsAddr, reg, func(ctx context.Context) error {
		if err := q.Ping(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
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
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = side.Shutdown(sctx)
	}()

	notify, err := store.WatchSchedules(ctx, cfg.DatabaseURL, func(err error) {
		log.Warn("schedule notifications interrupted; polling continues", "err", err)
	})
	if err != nil {
		log.Warn("no schedule notifications; polling only", "err", err, "interval", cfg.SyncInterval)
	}

	var wg sync.WaitGroup
	bg := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	bg(func() { lease.Run(ctx) })
	bg(func() { syncer.Run(ctx, cfg.SyncInterval, notify) })
	bg(func() { reloadOnHUP(ctx, cfg.SchedulesFile, registry, syncer, state, log) })

	names := make([]string, 0)
	for _, e := range engine.Entries() {
		names = append(names, e.Name)
	}
	log.Info("scheduler started", "schedules", names, "metrics_addr", side.Addr(),
		"lease_ttl", cfg.LeaseTTL, "sync_interval", cfg.SyncInterval, "catchup_window", cfg.CatchupWindow)
	err = engine.Run(ctx)
	wg.Wait()
	// Nothing fires any more: hand the lease over at once.
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if rerr := lease.Release(rctx); rerr != nil {
		log.Error("release lease", "err", rerr)
	}
	log.Info("scheduler stopped")
	return err
}

// reloadOnHUP reloads the schedules file on SIGHUP. A file that does not
// load, or that names a database schedule, is refused and the current
// schedules keep running.
func reloadOnHUP(ctx context.Context, path string, reg *tasks.Registry, syncer *schedule.Syncer, state *schedule.State, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if path == "" {
			log.Info("SIGHUP ignored: SCHEDULES_FILE is empty")
			continue
		}
		fresh, err := schedule.LoadFile(path, reg)
		if err == nil {
			err = syncer.SetFile(ctx, fresh)
		}
		if err != nil {
			log.Error("reload failed; keeping the current schedules", "err", err)
			continue
		}
		if err := state.PublishFile(ctx, fresh); err != nil {
			log.Error("publish file schedules", "err", err)
		}
		log.Info("schedules file reloaded", "count", len(fresh))
	}
}

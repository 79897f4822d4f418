// Command scheduler is the beat: it fires the cron entries of SCHEDULES_FILE
// as tasks, each tick under the task ID schedule:<name>:<tick unix seconds>
// so a tick is enqueued once however often it is attempted. SIGHUP reloads
// the file.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
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
	log := observe.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel).With("service", "scheduler")
	registry := tasks.All()

	var entries []*schedule.Entry
	if cfg.SchedulesFile != "" {
		if entries, err = schedule.LoadFile(cfg.SchedulesFile, registry); err != nil {
			return err
		}
	} else {
		log.Warn("SCHEDULES_FILE is empty: no file schedules")
	}

	q, err := queue.NewClient(cfg.RedisURL, registry, cfg.Queues)
	if err != nil {
		return err
	}
	defer q.Close()

	reg := observe.NewRegistry()
	engine := schedule.NewEngine(q, log, observe.NewScheduleMetrics(reg))
	engine.SetEntries(entries)

	side, err := observe.ListenSide(cfg.MetricsAddr, reg, func(ctx context.Context) error {
		if err := q.Ping(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
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

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if cfg.SchedulesFile == "" {
					continue
				}
				fresh, err := schedule.LoadFile(cfg.SchedulesFile, registry)
				if err != nil {
					log.Error("reload failed; keeping the current schedules", "err", err)
					continue
				}
				engine.SetEntries(fresh)
				log.Info("schedules reloaded", "count", len(fresh))
			}
		}
	}()

	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	log.Info("scheduler started", "schedules", names, "metrics_addr", side.Addr())
	err = engine.Run(ctx)
	log.Info("scheduler stopped")
	return err
}

package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/limits"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/tasks"
)

// startLimits puts flow control (limits and expiry) in front of mux's
// handlers and keeps the limits in sync with the operators' overrides
// until ctx ends. Call the returned func after the server has stopped.
func startLimits(ctx context.Context, opt asynq.RedisConnOpt, registry *tasks.Registry, log *slog.Logger,
	reg prometheus.Registerer, mux *tasks.Mux) (closeFunc func(), err error) {
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("redis: unsupported connection type %T", opt)
	}
	flow := observe.NewFlowMetrics(reg)
	enforcer := limits.NewEnforcer(rdb, limits.NewStore(rdb, registry.DefaultLimits()), log, flow)
	if err := enforcer.Sync(ctx); err != nil {
		log.Warn("limits: first sync failed; using the code defaults until it works", "err", err)
	}
	go enforcer.Run(ctx, limits.SyncInterval)
	mux.SetFlowControl(enforcer, flow)
	return func() { rdb.Close() }, nil
}

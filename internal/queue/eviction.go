package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrEvictingRedis means Redis may delete keys on its own when it is full:
// queued tasks, leases and heartbeats would vanish without a trace.
var ErrEvictingRedis = errors.New("redis evicts keys when full")

// RequireNoEviction refuses an evicting maxmemory-policy (anything but
// noeviction, whatever maxmemory is now: it can be set at run time) on every
// master. With noeviction a full Redis refuses writes instead, which
// Conveyor survives: the api keeps work in the outbox, workers retry. If the
// policy cannot be read (Redis down at start, INFO disabled) it logs a
// warning and lets the process start: the api must come up during an outage.
func RequireNoEviction(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	check := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return fmt.Errorf("read maxmemory-policy of %s: %w", c.Options().Addr, err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok && v != "noeviction" {
				return fmt.Errorf("%w: %s has maxmemory-policy %s; set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)",
					ErrEvictingRedis, c.Options().Addr, v)
			}
		}
		return nil
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, check)
	case *redis.Client:
		err = check(ctx, c)
	default:
		err = fmt.Errorf("redis client %T: cannot read maxmemory-policy", rdb)
	}
	if errors.Is(err, ErrEvictingRedis) {
		return err
	}
	if err != nil {
		log.Warn("cannot check Redis maxmemory-policy; it must be noeviction", "err", err)
	}
	return nil
}

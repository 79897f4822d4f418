package queue_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// BenchmarkRedisCommand runs one small script per iteration from 16
// goroutines, through a client as asynq makes it and through the worker's
// (queue.RedisClient, whose connections skip go-redis's per-command check).
func BenchmarkRedisCommand(b *testing.B) {
	url, _ := testenv.Redis(b)
	opt := mustRedisOpt(b, url)
	script := redis.NewScript(`return redis.call('INCR', KEYS[1])`)
	for _, v := range []string{"asynq", "worker"} {
		b.Run(v, func(b *testing.B) {
			rdb := opt.MakeRedisClient().(redis.UniversalClient)
			if v == "worker" {
				var err error
				if rdb, err = queue.RedisClient(opt); err != nil {
					b.Fatal(err)
				}
			}
			defer rdb.Close()
			ctx := context.Background()
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := script.Run(ctx, rdb, []string{"k"}).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

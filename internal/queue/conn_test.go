package queue_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// The worker's clients skip go-redis's check of a pooled connection before
// each command (conn.go): a connection Redis closed while it was idle must
// still cost no failed command and run each command once, since go-redis
// sends the command again on a new connection.
func TestWorkerClientSurvivesConnectionsClosedByRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, direct := testenv.Redis(t)
	rdb, err := queue.RedisClient(mustRedisOpt(t, url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	for round := range 3 {
		id, err := rdb.ClientID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := direct.ClientKillByFilter(ctx, "ID", strconv.FormatInt(id, 10)).Err(); err != nil {
			t.Fatal(err)
		}
		// The next command takes the idle connection Redis just closed.
		n, err := rdb.Incr(ctx, "counter").Result()
		if err != nil {
			t.Fatalf("round %d: command after the connection was closed: %v", round, err)
		}
		if n != int64(round+1) {
			t.Fatalf("round %d: counter = %d, want %d (each command once)", round, n, round+1)
		}
	}
}

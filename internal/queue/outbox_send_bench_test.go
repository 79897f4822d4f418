package queue_test

import (
	"context"
	"testing"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// BenchmarkRelayStepRows measures the outbox sender on rows shaped like a
// chord's group (system:ping, per-row options with the workflow step
// header), 500 per transaction: take (lock and mark sent) and enqueue, per row.
func BenchmarkRelayStepRows(b *testing.B) {
	ctx := context.Background()
	redisURL, _ := testenv.Redis(b)
	d, _ := testenv.DB(b)
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const batch = 500
	relay := queue.NewRelay(d, c, testenv.Logger(b), queue.RelayOptions{Batch: batch})
	b.ReportAllocs()
	rows := 0
	for b.Loop() {
		b.StopTimer()
		if _, err := d.ExecContext(ctx,
			`INSERT INTO outbox (task_type, payload, request_id, options)
			 SELECT $1, '{}', '', jsonb_build_object('headers', jsonb_build_object('workflow_step', gen_random_uuid()::text || ':g' || i))
			   FROM generate_series(1, $2) i`, tasks.TypeSystemPing, batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n, failed, err := relay.RelayOnce(ctx)
		if err != nil || failed > 0 || n != batch {
			b.Fatalf("RelayOnce = %d, %d, %v", n, failed, err)
		}
		rows += n
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rows), "ns/row")
}

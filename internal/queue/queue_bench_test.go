package queue_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// BenchmarkEnqueue measures the API's enqueue path (validate through the
// registry, build options, one Redis round trip) against the real Redis.
func BenchmarkEnqueue(b *testing.B) {
	url, _ := testenv.Redis(b)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	c, err := queue.NewClient(url, tasks.All(), queues)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := queue.Request{Type: tasks.TypeEmailWelcome, Payload: json.RawMessage(`{"user_id":42}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Enqueue(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/observe"
)

// QueueSnapshots reads every queue Redis knows, for observe.QueueCollector.
func (c *Client) QueueSnapshots(ctx context.Context) ([]observe.QueueSnapshot, error) {
	names, err := c.insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	out := make([]observe.QueueSnapshot, 0, len(names))
	for _, n := range sortedStrings(names) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		qi, err := c.insp.GetQueueInfo(n)
		if errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", n, err)
		}
		out = append(out, observe.QueueSnapshot{
			Queue: n,
			States: map[string]int{
				"pending": qi.Pending, "active": qi.Active, "scheduled": qi.Scheduled, "retry": qi.Retry,
				"archived": qi.Archived, "completed": qi.Completed, "aggregating": qi.Aggregating,
			},
			Size: qi.Size, Latency: qi.Latency, MemoryBytes: qi.MemoryUsage,
			ProcessedTotal: qi.ProcessedTotal, FailedTotal: qi.FailedTotal, Paused: qi.Paused,
		})
	}
	return out, nil
}

package queue

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// rowOptions turns an outbox row's per-row options (store.TaskOptions, set
// for workflow steps) into asynq options and extra task headers. A row
// without options gets none: its type's defaults apply.
func rowOptions(raw json.RawMessage) ([]asynq.Option, map[string]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var o store.TaskOptions
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, nil, fmt.Errorf("outbox row options: %w", err)
	}
	var opts []asynq.Option
	if o.Queue != "" {
		opts = append(opts, asynq.Queue(o.Queue))
	}
	if o.MaxRetry != nil {
		opts = append(opts, asynq.MaxRetry(*o.MaxRetry))
	}
	if o.Timeout > 0 {
		opts = append(opts, asynq.Timeout(time.Duration(o.Timeout)*time.Second))
	}
	if o.Countdown > 0 {
		opts = append(opts, asynq.ProcessIn(time.Duration(o.Countdown)*time.Second))
	}
	return opts, o.Headers, nil
}

// Registry is the task registry the client validates against.
func (c *Client) Registry() *tasks.Registry { return c.reg }

// ServedQueues are the queues the workers serve (WORKER_QUEUES).
func (c *Client) ServedQueues() map[string]int { return c.queues }

package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/tasks"
)

// TaskInfo is a task as the API shows it.
type TaskInfo struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Queue         string          `json:"queue"`
	State         string          `json:"state"`
	Retried       int             `json:"retried"`
	MaxRetry      int             `json:"max_retry"`
	LastError     string          `json:"last_error"`
	NextProcessAt *time.Time      `json:"next_process_at"`
	CompletedAt   *time.Time      `json:"completed_at"`
	Result        json.RawMessage `json:"result"`
	// Progress is what the handler last reported with tasks.ReportProgress.
	Progress *tasks.Progress `json:"progress"`
	Payload  json.RawMessage `json:"payload"`
	// Throttled: the task is waiting (state retry) because a limit of its
	// type was reached, not because it failed; LastError says which limit.
	Throttled bool `json:"throttled"`
	// ExpiresAt: the task's deadline, if it has one (see tasks.WithExpiry).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Finished reports whether the task will not run again by itself.
func (t TaskInfo) Finished() bool { return t.State == "completed" || t.State == "archived" }

func fromInfo(i *asynq.TaskInfo) TaskInfo {
	t := TaskInfo{
		ID: i.ID, Type: i.Type, Queue: i.Queue, State: i.State.String(),
		Retried: i.Retried, MaxRetry: i.MaxRetry, LastError: i.LastErr,
		NextProcessAt: timeOrNil(i.NextProcessAt), CompletedAt: timeOrNil(i.CompletedAt),
		Payload: jsonOrString(i.Payload),
	}
	result, progress := tasks.DecodeResult(i.Result)
	t.Result, t.Progress = jsonOrString(result), progress
	t.Throttled, t.ExpiresAt = flowState(i)
	return t
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// jsonOrString keeps valid JSON as is and wraps anything else as a JSON string.
func jsonOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// GetTask finds task id in queue, or in every queue when queue is empty.
func (c *Client) GetTask(ctx context.Context, id, queue string) (TaskInfo, error) {
	queues := []string{queue}
	if queue == "" {
		var err error
		if queues, err = c.insp.Queues(); err != nil {
			return TaskInfo{}, fmt.Errorf("list queues: %w", err)
		}
	}
	for _, q := range queues {
		info, err := c.insp.GetTaskInfo(q, id)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return TaskInfo{}, fmt.Errorf("get task %s: %w", id, err)
		}
		return fromInfo(info), nil
	}
	return TaskInfo{}, ErrNotFound
}

// WaitTask is GetTask that, for up to wait, polls until the task has
// finished (completed or archived): Celery's AsyncResult.get(timeout=). It
// returns the task as it is when it finishes or when wait ends.
func (c *Client) WaitTask(ctx context.Context, id, queue string, wait time.Duration) (TaskInfo, error) {
	const every = 200 * time.Millisecond
	deadline := time.Now().Add(wait)
	for {
		t, err := c.GetTask(ctx, id, queue)
		if err != nil || t.Finished() {
			return t, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return t, nil
		}
		queue = t.Queue
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(min(every, left)):
		}
	}
}

// cancelRepeat is how often Cancel repeats its request while the task
// stays active.
const cancelRepeat = 500 * time.Millisecond

// Cancel stops task id: an active task is cancelled (its handler's context
// ends) and then removed, so it is not retried; a waiting task (pending,
// scheduled, retry, archived, completed) is deleted. It returns what it did:
// "deleted", "canceled", or "cancel_requested" when the worker has not
// stopped the handler within wait.
func (c *Client) Cancel(ctx context.Context, id, queue string, wait time.Duration) (string, error) {
	t, err := c.GetTask(ctx, id, queue)
	if err != nil {
		return "", err
	}
	if t.State != "active" {
		if err := c.insp.DeleteTask(t.Queue, id); err != nil {
			return "", mapInspectErr(err, id)
		}
		return "deleted", nil
	}
	// A cancel request is a Redis PUBLISH that nobody stores: a worker that
	// has dequeued the task but not yet registered its handler's cancel
	// function, or whose subscription is (re)connecting, misses it. So the
	// request is repeated while the task stays active; a repeat reaching a
	// handler already cancelled does nothing.
	var published time.Time
	publish := func() error {
		published = time.Now()
		if err := c.insp.CancelProcessing(id); err != nil {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		return nil
	}
	if err := publish(); err != nil {
		return "", err
	}
	// The worker turns the cancelled attempt into a retry (or an archived
	// task on its last attempt); remove that so cancel means cancel.
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		cur, err := c.GetTask(ctx, id, t.Queue)
		if errors.Is(err, ErrNotFound) {
			return "canceled", nil
		}
		if err != nil {
			return "", err
		}
		if cur.State != "active" {
			if cur.State != "completed" {
				if err := c.insp.DeleteTask(t.Queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
					return "", mapInspectErr(err, id)
				}
			}
			return "canceled", nil
		}
		if time.Since(published) >= cancelRepeat {
			if err := publish(); err != nil {
				return "", err
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "cancel_requested", nil
}

// RunNow moves a scheduled, retry or archived task to pending.
func (c *Client) RunNow(ctx context.Context, id, queue string) (TaskInfo, error) {
	t, err := c.GetTask(ctx, id, queue)
	if err != nil {
		return TaskInfo{}, err
	}
	switch t.State {
	case "scheduled", "retry", "archived":
	default:
		return t, fmt.Errorf("task %s is %s: %w", id, t.State, ErrNotRunnable)
	}
	if err := c.insp.RunTask(t.Queue, id); err != nil {
		return TaskInfo{}, mapInspectErr(err, id)
	}
	return c.GetTask(ctx, id, t.Queue)
}

func mapInspectErr(err error, id string) error {
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return ErrNotFound
	}
	return fmt.Errorf("task %s: %w", id, err)
}

// QueueStats is one queue's counters.
type QueueStats struct {
	Queue          string  `json:"queue"`
	Size           int     `json:"size"`
	Pending        int     `json:"pending"`
	Active         int     `json:"active"`
	Scheduled      int     `json:"scheduled"`
	Retry          int     `json:"retry"`
	Archived       int     `json:"archived"`
	Completed      int     `json:"completed"`
	ProcessedToday int     `json:"processed_today"`
	FailedToday    int     `json:"failed_today"`
	Paused         bool    `json:"paused"`
	LatencySeconds float64 `json:"latency_seconds"`
}

// Queues returns stats for every queue known to Redis plus the configured
// ones (an unused configured queue shows zeros), sorted by name.
func (c *Client) Queues(ctx context.Context) ([]QueueStats, error) {
	names, err := c.insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	for _, n := range sortedKeys(c.queues) {
		if !seen[n] {
			names = append(names, n)
		}
	}
	out := make([]QueueStats, 0, len(names))
	for _, n := range sortedStrings(names) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !seen[n] {
			out = append(out, QueueStats{Queue: n})
			continue
		}
		qi, err := c.insp.GetQueueInfo(n)
		if errors.Is(err, asynq.ErrQueueNotFound) {
			out = append(out, QueueStats{Queue: n})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", n, err)
		}
		out = append(out, QueueStats{
			Queue: n, Size: qi.Size, Pending: qi.Pending, Active: qi.Active, Scheduled: qi.Scheduled,
			Retry: qi.Retry, Archived: qi.Archived, Completed: qi.Completed,
			ProcessedToday: qi.Processed, FailedToday: qi.Failed, Paused: qi.Paused,
			LatencySeconds: qi.Latency.Seconds(),
		})
	}
	return out, nil
}

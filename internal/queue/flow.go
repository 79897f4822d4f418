package queue

import (
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/limits"
	"github.com/conveyor-run/conveyor/tasks"
)

// flowState reads what flow control left on a task: whether it waits
// because of a limit, and its deadline.
func flowState(i *asynq.TaskInfo) (throttled bool, expiresAt *time.Time) {
	throttled = i.State == asynq.TaskStateRetry && strings.HasPrefix(i.LastErr, limits.ThrottledPrefix)
	if at, ok := tasks.ExpiryOf(i.Headers); ok {
		expiresAt = timeOrNil(at)
	}
	return throttled, expiresAt
}

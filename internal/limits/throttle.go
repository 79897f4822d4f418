package limits

import (
	"errors"
	"fmt"
	"time"
)

// Kinds of limit, as metrics label them.
const (
	KindRate        = "rate"
	KindConcurrency = "concurrency"
)

// Throttled is the error of a task that may not start yet. It is not a
// failure: the worker retries the task after RetryAfter without spending
// one of its retries. Its text is the task's last_error while it waits, so
// it says which limit and when it will try again.
type Throttled struct {
	Kind       string // KindRate or KindConcurrency
	Limit      string // the limit, e.g. "10 per 1s (burst 10) per user_id"
	RetryAfter time.Duration
}

func (t *Throttled) Error() string {
	return fmt.Sprintf("%s %s: %s limit %s reached; next try in %s",
		ThrottledPrefix, t.Kind, t.Kind, t.Limit, t.RetryAfter.Round(time.Millisecond))
}

// ThrottledPrefix starts the last_error of every throttled task.
const ThrottledPrefix = "throttled:"

// AsThrottled returns the Throttled in err's chain, if any.
func AsThrottled(err error) (*Throttled, bool) {
	var t *Throttled
	if errors.As(err, &t) {
		return t, true
	}
	return nil, false
}

// IsFailure is asynq's Config.IsFailure: a throttled attempt is not a
// failure, so asynq retries it without counting a retry.
func IsFailure(err error) bool {
	_, throttled := AsThrottled(err)
	return !throttled
}

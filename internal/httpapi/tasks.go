package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// taskRequest is the body of POST /api/v1/tasks and one item of
// POST /api/v1/tasks/batch.
type taskRequest struct {
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Queue     string          `json:"queue"`
	MaxRetry  *int            `json:"max_retry"`
	Countdown *int64          `json:"countdown"`
	ETA       string          `json:"eta"`
	Timeout   *int64          `json:"timeout"`
	UniqueFor *int64          `json:"unique_for"`
	TaskID    string          `json:"task_id"`
	ExpiresIn *int64          `json:"expires_in"`
	ExpiresAt string          `json:"expires_at"`
	Retention *int64          `json:"retention"`
}

// taskResponse is the answer of POST /api/v1/tasks and one item of the batch's.
type taskResponse struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	State string `json:"state"`
}

// prepare checks what the queue client does not (type present, eta's
// format) and validates the rest through the registry: the task to
// enqueue, or the invalid fields.
func (req taskRequest) prepare(q *queue.Client, derivedTaskID, requestID string) (queue.Prepared, error) {
	fields := tasks.FieldErrors{}
	if strings.TrimSpace(req.Type) == "" {
		fields["type"] = "is required"
	}
	var eta *time.Time
	if req.ETA != "" {
		t, err := time.Parse(time.RFC3339, req.ETA)
		if err != nil {
			fields["eta"] = "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"
		} else {
			eta = &t
		}
	}
	expires := parseExpiry(req.ExpiresIn, req.ExpiresAt, fields)
	if len(fields) > 0 {
		return queue.Prepared{}, fields
	}
	return q.Prepare(queue.Request{
		Type: req.Type, Payload: req.Payload, Queue: req.Queue, MaxRetry: req.MaxRetry,
		Countdown: req.Countdown, ETA: eta, Timeout: req.Timeout, UniqueFor: req.UniqueFor,
		TaskID: req.TaskID, DerivedTaskID: derivedTaskID, RequestID: requestID, ExpiresAt: expires,
		Retention: req.Retention,
	})
}

// handleTaskCreate enqueues any registered task type (POST /api/v1/tasks).
func handleTaskCreate(q *queue.Client) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req taskRequest
		if err := bind(c, &req); err != nil {
			return err
		}
		p, err := req.prepare(q, idempotentTaskID(c), RequestID(c))
		if err != nil {
			return err
		}
		info, err := q.EnqueuePrepared(c.Request().Context(), p)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, taskResponse{ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State})
	}
}

// maxTaskWait caps ?wait= well inside the api's HTTP write timeout.
const maxTaskWait = 60 * time.Second

// handleTaskGet shows a task's state, progress and result
// (GET /api/v1/tasks/{id}). With ?wait=30s it long-polls: it answers as soon
// as the task has finished (completed or archived), or with its current
// state when the wait ends, like Celery's AsyncResult.get(timeout=30). A task
// that is in no queue is answered from PostgreSQL (queue.Client.Gone): a
// workflow step's task from its finished step, anything else with a 404 that
// says why, from its outbox row if it has one: its record expired after its
// type's retention, it is not enqueued yet, or it was never enqueued.
func handleTaskGet(q *queue.Client, db *sqlx.DB) echo.HandlerFunc {
	var d store.Querier // nil without a database
	if db != nil {
		d = db
	}
	return func(c echo.Context) error {
		wait, err := parseWait(c.QueryParam("wait"))
		if err != nil {
			return errValidation(map[string]string{"wait": err.Error()})
		}
		ctx, id, qname := c.Request().Context(), c.Param("id"), c.QueryParam("queue")
		var info queue.TaskInfo
		if wait > 0 {
			info, err = q.WaitTask(ctx, id, qname, wait)
		} else {
			info, err = q.GetTask(ctx, id, qname)
		}
		if errors.Is(err, queue.ErrNotFound) {
			info, err = q.Gone(ctx, d, id)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, info)
	}
}

// parseWait reads ?wait= as a duration ("30s", "1m") or whole seconds ("30").
func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr != nil {
			return 0, fmt.Errorf("must be a duration such as 30s, at most %s", maxTaskWait)
		}
		if n < 0 || n > int64(maxTaskWait/time.Second) { // before the multiplication can overflow
			return 0, fmt.Errorf("must be between 0s and %s", maxTaskWait)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > maxTaskWait {
		return 0, fmt.Errorf("must be between 0s and %s", maxTaskWait)
	}
	return d, nil
}

// handleTaskCancel cancels an active task or deletes a waiting one
// (DELETE /api/v1/tasks/{id}).
func handleTaskCancel(q *queue.Client, wait time.Duration) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Param("id")
		action, err := q.Cancel(c.Request().Context(), id, c.QueryParam("queue"), wait)
		if err != nil {
			return err
		}
		status := http.StatusOK
		if action == "cancel_requested" {
			status = http.StatusAccepted
		}
		return c.JSON(status, map[string]string{"id": id, "result": action})
	}
}

// handleTaskRun runs a scheduled, retry or archived task now
// (POST /api/v1/tasks/{id}/run).
func handleTaskRun(q *queue.Client) echo.HandlerFunc {
	return func(c echo.Context) error {
		info, err := q.RunNow(c.Request().Context(), c.Param("id"), c.QueryParam("queue"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, info)
	}
}

// handleQueueList shows per-queue counters and the transactional outbox's
// backlog (GET /api/v1/queues). While Redis is down the answer is a 503 that
// still carries outbox_pending: the work waiting to be enqueued.
func handleQueueList(q *queue.Client, d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		ob, err := store.NewOutbox(d).Stats(c.Request().Context())
		if err != nil {
			return err
		}
		resp := map[string]any{"outbox_pending": ob.Pending, "outbox_retrying": ob.Retrying, "outbox_dead": ob.Dead,
			"outbox_oldest_seconds": ob.OldestSeconds}
		stats, err := q.Queues(c.Request().Context())
		if err != nil {
			resp["queues"] = []queue.QueueStats{}
			resp["error"] = &APIError{Code: "redis_unavailable", Message: "queue statistics are unavailable: Redis did not answer"}
			return c.JSON(http.StatusServiceUnavailable, resp)
		}
		resp["queues"] = stats
		return c.JSON(http.StatusOK, resp)
	}
}

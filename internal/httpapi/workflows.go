package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/workflow"
)

// handleWorkflowCreate validates a DAG of registered tasks and starts it
// (POST /api/v1/workflows): the workflow's rows and the outbox rows of its
// first steps commit together, with the Idempotency-Key if one was sent.
// Anything invalid is a 422 naming steps[i].field, and nothing is stored.
func handleWorkflowCreate(d *sqlx.DB, q *queue.Client, disp *queue.Dispatcher, metrics *observe.WorkflowMetrics, idemTTL time.Duration) echo.HandlerFunc {
	return func(c echo.Context) error {
		idem, err := readIdempotency(c, idemTTL)
		if err != nil {
			return err
		}
		var spec workflow.Spec
		if err := bind(c, &spec); err != nil {
			return err
		}
		replayed, err := createInTx(c, d, disp, idem, http.StatusAccepted, func(tx *sqlx.Tx) (any, []string, error) {
			v, err := workflow.Start(c.Request().Context(), tx, q.Registry(), spec,
				workflow.StartOptions{RequestID: RequestID(c), Queues: q.ServedQueues()})
			return v, v.Outbox(), err
		})
		if err == nil && !replayed {
			metrics.Started(1)
		}
		return err
	}
}

// workflowID reads the {id} path parameter; anything but a UUID is a 404.
func workflowID(c echo.Context) (string, error) {
	id := c.Param("id")
	if !store.IsUUID(id) {
		return "", errNotFound("workflow")
	}
	return id, nil
}

// handleWorkflowGet shows a workflow with its steps, their results and
// errors (GET /api/v1/workflows/{id}). With ?wait=30s it long-polls: it
// answers as soon as the workflow has ended, or as it is when the wait ends.
func handleWorkflowGet(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := workflowID(c)
		if err != nil {
			return err
		}
		wait, err := parseWait(c.QueryParam("wait"))
		if err != nil {
			return errValidation(map[string]string{"wait": err.Error()})
		}
		ctx := c.Request().Context()
		wfs := store.NewWorkflows(d)
		const every = 200 * time.Millisecond
		deadline := time.Now().Add(wait)
		for {
			w, err := wfs.Get(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return errNotFound("workflow")
			}
			if err != nil {
				return err
			}
			left := time.Until(deadline)
			if w.State != store.WorkflowRunning || left <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(every, left)):
			}
		}
		v, err := workflow.Get(ctx, d, id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, v)
	}
}

// handleWorkflowList lists workflows, newest first, optionally in one state
// (GET /api/v1/workflows?state=&limit=&skip=).
func handleWorkflowList(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		page, err := parsePage(c)
		if err != nil {
			return err
		}
		state := c.QueryParam("state")
		switch state {
		case "", store.WorkflowRunning, store.WorkflowSucceeded, store.WorkflowFailed, store.WorkflowCancelled:
		default:
			return errValidation(map[string]string{"state": "must be one of running, succeeded, failed, cancelled"})
		}
		list, total, err := store.NewWorkflows(d).List(c.Request().Context(), state, page)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, listResponse[store.Workflow]{Data: list, Total: total})
	}
}

// handleWorkflowCancel cancels a running workflow (DELETE
// /api/v1/workflows/{id}): waiting steps are cancelled, enqueued ones are
// removed from the queue or, if running, cancelled through asynq. It answers
// with the workflow as it is then; cancelling a finished workflow changes
// nothing.
func handleWorkflowCancel(d *sqlx.DB, q *queue.Client, metrics *observe.WorkflowMetrics, log *slog.Logger, wait time.Duration) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := workflowID(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		ended, err := workflow.Cancel(ctx, d, q, id, wait)
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("workflow")
		}
		if ended {
			metrics.Finished(store.WorkflowCancelled)
		}
		if err != nil && !ended {
			return err
		}
		if err != nil {
			// Cancelled in Postgres; a task that could not be removed now is
			// dropped by the worker when it comes up.
			log.WarnContext(ctx, "workflow cancelled; some of its tasks stay in the queue until a worker drops them",
				"request_id", RequestID(c), "workflow_id", id, "err", err)
		}
		v, err := workflow.Get(ctx, d, id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, v)
	}
}

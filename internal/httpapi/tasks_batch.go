package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/tasks"
)

// maxBatchTasks bounds POST /api/v1/tasks/batch.
const maxBatchTasks = 1000

// handleTaskBatch enqueues up to 1,000 tasks in one request
// (POST /api/v1/tasks/batch). Every item is exactly what POST /api/v1/tasks
// takes and is validated before anything is enqueued: one invalid item
// answers 422 naming tasks[i].field, and nothing is enqueued. Duplicate
// task_ids inside the batch are invalid too. A task_id already in use in
// Redis is found only while enqueueing: that item alone is reported with
// state "conflict" and an error, the others are enqueued (202 either way).
//
// With an Idempotency-Key, items without a task_id get IDs derived from the
// key and their index, so a retried batch enqueues nothing twice.
func handleTaskBatch(q *queue.Client) echo.HandlerFunc {
	type request struct {
		Tasks []json.RawMessage `json:"tasks"`
	}
	type item struct {
		taskResponse
		Error *APIError `json:"error,omitempty"`
	}
	type response struct {
		Tasks []item `json:"tasks"`
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		switch n := len(req.Tasks); {
		case n == 0:
			return errValidation(map[string]string{"tasks": "must hold at least one task"})
		case n > maxBatchTasks:
			return errValidation(map[string]string{"tasks": fmt.Sprintf("must hold at most %d tasks, not %d", maxBatchTasks, n)})
		}

		fields := map[string]string{}
		prepared := make([]queue.Prepared, len(req.Tasks))
		items := make([]taskRequest, len(req.Tasks))
		firstWithID := map[string]int{}
		idemID := idempotentTaskID(c)
		for i, raw := range req.Tasks {
			prefix := "tasks[" + strconv.Itoa(i) + "]"
			if err := decodeItem(raw, &items[i]); err != nil {
				if len(err.Fields) == 0 {
					fields[prefix] = err.Message
				}
				for k, v := range err.Fields {
					fields[prefix+"."+k] = v
				}
				continue
			}
			r := items[i]
			prefix += "."
			if id := r.TaskID; id != "" {
				if j, ok := firstWithID[id]; ok {
					fields[prefix+"task_id"] = fmt.Sprintf("duplicates tasks[%d].task_id", j)
				} else {
					firstWithID[id] = i
				}
			}
			derived := ""
			if idemID != "" {
				derived = idemID + ":" + strconv.Itoa(i)
			}
			p, err := r.prepare(q, derived, RequestID(c))
			var fe tasks.FieldErrors
			switch {
			case errors.As(err, &fe):
				for k, v := range fe {
					fields[prefix+k] = v
				}
			case err != nil:
				return err
			}
			prepared[i] = p
		}
		if len(fields) > 0 {
			return errValidation(fields)
		}

		infos, errs := q.EnqueueBatch(c.Request().Context(), prepared)
		resp := response{Tasks: make([]item, len(infos))}
		for i, info := range infos {
			switch err := errs[i]; {
			case err == nil:
				resp.Tasks[i] = item{taskResponse: taskResponse{ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State}}
			case errors.Is(err, queue.ErrConflict):
				resp.Tasks[i] = item{
					taskResponse: taskResponse{ID: items[i].TaskID, Type: items[i].Type, State: "conflict"},
					Error:        toAPIError(err),
				}
			default:
				// Redis failed part-way: the caller cannot know which items
				// went in, so it must retry (with an Idempotency-Key or
				// task_ids that is safe).
				return err
			}
		}
		return c.JSON(http.StatusAccepted, resp)
	}
}

// decodeItem decodes one batch item as strictly as bind decodes a body.
func decodeItem(raw json.RawMessage, dst *taskRequest) *APIError {
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return errBadRequest("must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	return nil
}

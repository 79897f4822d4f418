package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/schedule"
)

// scheduleError maps the catalog's own sentinel; everything else goes
// through the shared error mapping.
func scheduleError(err error) error {
	if errors.Is(err, schedule.ErrReadOnly) {
		return errConflict("this schedule comes from SCHEDULES_FILE and is read-only: edit the file and send the schedulers SIGHUP")
	}
	return err
}

// handleScheduleList lists file and database schedules with their next and
// last fire, and the scheduler leader (GET /api/v1/schedules).
func handleScheduleList(cat *schedule.Catalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		views, status, err := cat.List(c.Request().Context())
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"schedules": views, "scheduler": status})
	}
}

// handleScheduleGet shows one schedule (GET /api/v1/schedules/{name}).
func handleScheduleGet(cat *schedule.Catalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		v, err := cat.Get(c.Request().Context(), c.Param("name"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, v)
	}
}

// handleScheduleCreate adds a database schedule (POST /api/v1/schedules).
// The spec, time zone, task type, payload and queue are checked the way the
// scheduler will use them: a bad field is a 422 naming it.
func handleScheduleCreate(cat *schedule.Catalog) echo.HandlerFunc {
	type request struct {
		Name          string          `json:"name"`
		Spec          string          `json:"spec"`
		Timezone      string          `json:"timezone"`
		TaskType      string          `json:"task_type"`
		Payload       json.RawMessage `json:"payload"`
		Queue         string          `json:"queue"`
		MaxRetry      *int            `json:"max_retry"`
		Timeout       *int            `json:"timeout"`        // seconds
		CatchupWindow *int            `json:"catchup_window"` // seconds
		ExpiresIn     *int            `json:"expires_in"`     // seconds after the tick
		Enabled       *bool           `json:"enabled"`        // default true
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		fields := map[string]string{}
		for name, v := range map[string]string{"name": req.Name, "spec": req.Spec, "task_type": req.TaskType} {
			if v == "" {
				fields[name] = "is required"
			}
		}
		if len(fields) > 0 {
			return errValidation(fields)
		}
		enabled := req.Enabled == nil || *req.Enabled
		v, err := cat.Create(c.Request().Context(), schedule.Input{
			Name: req.Name, Spec: req.Spec, Timezone: req.Timezone, TaskType: req.TaskType, Payload: req.Payload,
			Queue: req.Queue, MaxRetry: req.MaxRetry, Timeout: req.Timeout, CatchupWindow: req.CatchupWindow,
			ExpiresIn: req.ExpiresIn, Enabled: enabled,
		})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, v)
	}
}

// optional is a PATCH field: Set when the key was sent, Value nil when it
// was sent as null (back to the default).
type optional[T any] struct {
	Set   bool
	Value *T `text:"inline"` // checkText: the field's own path
}

func (o *optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	o.Value = &v
	return nil
}

// handleSchedulePatch changes some fields of a database schedule, including
// enabled (PATCH /api/v1/schedules/{name}). Options sent as null return to
// the task type's defaults. The schedulers pick the change up within
// SCHEDULE_SYNC_INTERVAL (at once when notifications work); the new
// definition fires no tick from before the change.
func handleSchedulePatch(cat *schedule.Catalog) echo.HandlerFunc {
	type request struct {
		Spec          optional[string]          `json:"spec"`
		Timezone      optional[string]          `json:"timezone"`
		TaskType      optional[string]          `json:"task_type"`
		Payload       optional[json.RawMessage] `json:"payload"`
		Queue         optional[string]          `json:"queue"`
		MaxRetry      optional[int]             `json:"max_retry"`
		Timeout       optional[int]             `json:"timeout"`
		CatchupWindow optional[int]             `json:"catchup_window"`
		ExpiresIn     optional[int]             `json:"expires_in"`
		Enabled       optional[bool]            `json:"enabled"`
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		fields := map[string]string{}
		for name, o := range map[string]optional[string]{"spec": req.Spec, "task_type": req.TaskType} {
			if o.Set && (o.Value == nil || *o.Value == "") {
				fields[name] = "must not be empty"
			}
		}
		if req.Enabled.Set && req.Enabled.Value == nil {
			fields["enabled"] = "must be true or false"
		}
		if len(fields) > 0 {
			return errValidation(fields)
		}
		str := func(o optional[string], dst *string) {
			if o.Set {
				*dst = ""
				if o.Value != nil {
					*dst = *o.Value
				}
			}
		}
		v, err := cat.Update(c.Request().Context(), c.Param("name"), func(in *schedule.Input) {
			str(req.Spec, &in.Spec)
			str(req.Timezone, &in.Timezone)
			str(req.TaskType, &in.TaskType)
			str(req.Queue, &in.Queue)
			if req.Payload.Set {
				in.Payload = nil
				if req.Payload.Value != nil {
					in.Payload = *req.Payload.Value
				}
			}
			if req.MaxRetry.Set {
				in.MaxRetry = req.MaxRetry.Value
			}
			if req.Timeout.Set {
				in.Timeout = req.Timeout.Value
			}
			if req.CatchupWindow.Set {
				in.CatchupWindow = req.CatchupWindow.Value
			}
			if req.ExpiresIn.Set {
				in.ExpiresIn = req.ExpiresIn.Value
			}
			if req.Enabled.Value != nil {
				in.Enabled = *req.Enabled.Value
			}
		})
		if err != nil {
			return scheduleError(err)
		}
		return c.JSON(http.StatusOK, v)
	}
}

// handleScheduleDelete removes a database schedule
// (DELETE /api/v1/schedules/{name}).
func handleScheduleDelete(cat *schedule.Catalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := cat.Delete(c.Request().Context(), c.Param("name")); err != nil {
			return scheduleError(err)
		}
		return c.NoContent(http.StatusNoContent)
	}
}

// handleScheduleFire enqueues a schedule's task now, once
// (POST /api/v1/schedules/{name}/fire). The task ID is
// schedule:<name>:manual:<unix seconds>, so a double click is a 409, not a
// second task.
func handleScheduleFire(cat *schedule.Catalog) echo.HandlerFunc {
	type response struct {
		ID    string `json:"id"`
		Type  string `json:"type"`
		Queue string `json:"queue"`
		State string `json:"state"`
	}
	return func(c echo.Context) error {
		info, err := cat.Fire(c.Request().Context(), c.Param("name"), RequestID(c))
		if err != nil {
			return scheduleError(err)
		}
		return c.JSON(http.StatusAccepted, response{ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State})
	}
}

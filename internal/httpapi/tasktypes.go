package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/limits"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/tasks"
)

// taskTypeDeps gives the task-type routes the registry and limits store of
// q; without a queue (servers built for tests of other routes) there are no
// types.
func taskTypeDeps(q *queue.Client) (*tasks.Registry, *limits.Store) {
	if q == nil {
		return tasks.NewRegistry(), limits.NewStore(nil, nil)
	}
	return q.Registry(), limits.NewStore(q.Redis(), q.Registry().DefaultLimits())
}

// taskTypeView is one entry of the task-type catalog. Durations are in
// seconds, like the task endpoints' timeout.
type taskTypeView struct {
	Type          string        `json:"type"`
	Queue         string        `json:"queue"`
	MaxRetry      int           `json:"max_retry"`
	Timeout       float64       `json:"timeout"`
	Retention     float64       `json:"retention"`
	RetryBase     float64       `json:"retry_base"`
	RetryCap      float64       `json:"retry_cap"`
	ExpiresIn     *float64      `json:"expires_in"` // default deadline; null: none
	PayloadFields []string      `json:"payload_fields"`
	Limits        limits.Limits `json:"limits"` // effective: code default or override
}

func newTaskTypeView(t tasks.Type, l limits.Limits) taskTypeView {
	v := taskTypeView{
		Type: t.Name, Queue: t.Opts.Queue, MaxRetry: t.Opts.MaxRetry,
		Timeout: t.Opts.Timeout.Seconds(), Retention: t.Retention().Seconds(),
		RetryBase: t.Opts.RetryBase.Seconds(), RetryCap: t.Opts.RetryCap.Seconds(),
		PayloadFields: t.Fields, Limits: l,
	}
	if v.PayloadFields == nil {
		v.PayloadFields = []string{}
	}
	if t.Opts.ExpiresIn > 0 {
		s := t.Opts.ExpiresIn.Seconds()
		v.ExpiresIn = &s
	}
	return v
}

// handleTaskTypeList is the catalog of task types (GET /api/v1/task-types):
// what can be enqueued, with its defaults and effective limits.
func handleTaskTypeList(reg *tasks.Registry, ls *limits.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		out := []taskTypeView{}
		types := reg.Types()
		if len(types) == 0 {
			return c.JSON(http.StatusOK, map[string]any{"data": out})
		}
		all, err := ls.All(c.Request().Context())
		if err != nil {
			return err
		}
		for _, t := range types {
			out = append(out, newTaskTypeView(t, all[t.Name]))
		}
		return c.JSON(http.StatusOK, map[string]any{"data": out})
	}
}

type limitsView struct {
	Type     string        `json:"type"`
	Limits   limits.Limits `json:"limits"`   // effective
	Defaults limits.Limits `json:"defaults"` // from the type's definition
}

// handleTaskLimitsGet shows a type's effective limits
// (GET /api/v1/task-types/{type}/limits).
func handleTaskLimitsGet(reg *tasks.Registry, ls *limits.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		t, ok := reg.Lookup(c.Param("type"))
		if !ok {
			return errNotFound("task type")
		}
		l, err := ls.Get(c.Request().Context(), t.Name)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, limitsView{Type: t.Name, Limits: l, Defaults: ls.Defaults(t.Name)})
	}
}

// handleTaskLimitsPut overrides a type's limits
// (PUT /api/v1/task-types/{type}/limits): each part optional, null removes
// that kind of limit. Every worker applies the change within
// limits.SyncInterval.
func handleTaskLimitsPut(reg *tasks.Registry, ls *limits.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		t, ok := reg.Lookup(c.Param("type"))
		if !ok {
			return errNotFound("task type")
		}
		if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" && !isJSON(ct) {
			return &APIError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
				Message: "send the body as application/json"}
		}
		body, err := io.ReadAll(c.Request().Body)
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return errTooLarge(maxErr.Limit)
		}
		if err != nil {
			return errBadRequest("could not read the request body")
		}
		p, err := limits.ParsePatch(body, t.Fields)
		var fe limits.FieldErrors
		switch {
		case errors.As(err, &fe):
			return errValidation(fe)
		case errors.Is(err, limits.ErrBody) && !json.Valid(body):
			return errBadRequest("malformed JSON: " + err.Error())
		case err != nil:
			return errBadRequest(err.Error())
		}
		l, err := ls.Put(c.Request().Context(), t.Name, p)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, limitsView{Type: t.Name, Limits: l, Defaults: ls.Defaults(t.Name)})
	}
}

// handleTaskLimitsDelete drops a type's overrides: its code defaults apply
// again (DELETE /api/v1/task-types/{type}/limits).
func handleTaskLimitsDelete(reg *tasks.Registry, ls *limits.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		t, ok := reg.Lookup(c.Param("type"))
		if !ok {
			return errNotFound("task type")
		}
		l, err := ls.Reset(c.Request().Context(), t.Name)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, limitsView{Type: t.Name, Limits: l, Defaults: ls.Defaults(t.Name)})
	}
}

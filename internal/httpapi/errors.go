package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// APIError is an error with its HTTP status and public message.
type APIError struct {
	Status  int               `json:"-"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
	cause   error
}

func (e *APIError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }
func (e *APIError) Unwrap() error { return e.cause }

func errBadRequest(msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: msg}
}

func errValidation(fields map[string]string) *APIError {
	return &APIError{Status: http.StatusUnprocessableEntity, Code: "validation_failed",
		Message: "the request has invalid fields", Fields: fields}
}

func errNotFound(what string) *APIError {
	return &APIError{Status: http.StatusNotFound, Code: "not_found", Message: what + " not found"}
}

func errConflict(msg string) *APIError {
	return &APIError{Status: http.StatusConflict, Code: "conflict", Message: msg}
}

func errUnauthorized(msg string) *APIError {
	return &APIError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: msg}
}

func errTooLarge(limit int64) *APIError {
	return &APIError{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
		Message: fmt.Sprintf("request body exceeds %d bytes", limit)}
}

func errInternal(what string, cause any) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Code: "internal",
		Message: "internal server error", cause: fmt.Errorf("%s: %v", what, cause)}
}

// toAPIError maps any error to the response it deserves. Unknown errors are
// 500s whose detail is logged, never sent.
func toAPIError(err error) *APIError {
	var ae *APIError
	var fe tasks.FieldErrors
	var he *echo.HTTPError
	var missing *queue.MissingTask
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &fe):
		return errValidation(fe)
	case errors.As(err, &missing):
		code := map[string]string{queue.MissingExpired: "task_expired", queue.MissingNotEnqueued: "task_not_enqueued"}[missing.Reason]
		if code == "" {
			code = "not_found"
		}
		return &APIError{Status: http.StatusNotFound, Code: code, Message: missing.Error()}
	case errors.Is(err, queue.ErrNotFound):
		return errNotFound("task")
	case errors.Is(err, queue.ErrConflict):
		return errConflict("a task with this ID already exists")
	case errors.Is(err, queue.ErrNotRunnable):
		return errConflict(err.Error())
	case errors.Is(err, queue.ErrUnavailable):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "redis_unavailable",
			Message: "the task could not be queued now (Redis is down or full); retry later", cause: err}
	case errors.Is(err, store.ErrNotFound):
		return errNotFound("resource")
	case errors.Is(err, store.ErrConflict):
		return errConflict("resource already exists")
	case errors.As(err, &he):
		code := map[int]string{
			http.StatusNotFound:         "not_found",
			http.StatusMethodNotAllowed: "method_not_allowed",
			http.StatusUnauthorized:     "unauthorized",
			http.StatusForbidden:        "forbidden",
		}[he.Code]
		if code == "" {
			code = strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "_"))
		}
		return &APIError{Status: he.Code, Code: code, Message: fmt.Sprint(he.Message), cause: he.Internal}
	case db.IsUnavailable(err):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "database_unavailable",
			Message: "the database is unavailable; retry later (with the same Idempotency-Key, if any)", cause: err}
	default:
		return &APIError{Status: http.StatusInternalServerError, Code: "internal",
			Message: "internal server error", cause: err}
	}
}

func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			// The caller has its answer; what failed after it (recording an
			// idempotent response, say) must still reach the log.
			log.ErrorContext(c.Request().Context(), "request failed after the response was sent",
				"request_id", RequestID(c), "route", c.Path(), "err", err)
			return
		}
		ae := toAPIError(err)
		if ae.Status >= 500 {
			log.ErrorContext(c.Request().Context(), "request failed",
				"request_id", RequestID(c), "route", c.Path(), "err", err)
		}
		_ = c.JSON(ae.Status, map[string]*APIError{"error": ae})
	}
}

// bind decodes the JSON body into dst strictly: malformed JSON is 400,
// unknown fields, wrong types and strings that are not text (NUL, control
// characters: see text.go) are 422 naming the field, an oversized body is
// 413.
func bind(c echo.Context, dst any) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" && !isJSON(ct) {
		return &APIError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: "send the body as application/json"}
	}
	// The body is kept as it is read: when nothing in it can decode to a
	// character that is not text, the walk over the decoded value is skipped.
	var body bytes.Buffer
	dec := json.NewDecoder(io.TeeReader(req.Body, &body))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, extra := dec.Token(); !errors.Is(extra, io.EOF) {
			return errBadRequest("the body must hold exactly one JSON object")
		}
		if !mayHoldNonText(body.Bytes()) {
			return nil
		}
		fields := map[string]string{}
		checkText(reflect.ValueOf(dst), "", fields)
		if len(fields) > 0 {
			return errValidation(fields)
		}
		return nil
	}
	return decodeError(err)
}

// decodeError maps a strict JSON decode error to the response it deserves
// (bind, and the batch endpoint's per-item decode).
func decodeError(err error) *APIError {
	var maxErr *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &maxErr):
		return errTooLarge(maxErr.Limit)
	case errors.Is(err, io.EOF):
		return errBadRequest("the request body is empty; send a JSON object")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return errBadRequest("malformed JSON: " + err.Error())
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return errBadRequest("the body must be a JSON object")
		}
		return errValidation(map[string]string{typeErr.Field: fmt.Sprintf("must be of type %s, not %s", jsonKind(typeErr.Type.String()), typeErr.Value)})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return errValidation(map[string]string{name: "unknown field"})
	default:
		return errBadRequest("malformed JSON: " + err.Error())
	}
}

// isJSON reports whether a Content-Type is application/json, parameters
// such as charset aside (a prefix test would let application/jsonx in).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == echo.MIMEApplicationJSON
}

// jsonKind names Go types the way a JSON caller thinks of them.
func jsonKind(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int", "int64", "int32", "uint", "uint64":
		return "integer"
	case "float64", "float32":
		return "number"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "json.RawMessage":
		return "JSON value"
	}
	if strings.HasPrefix(goType, "[]") {
		return "array"
	}
	return "object"
}

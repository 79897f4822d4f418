package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// dashboardErrors serves h (Asynqmon) and turns its failures into the API's
// JSON errors (its own 4xx keep their status). Asynqmon answers every error of asynq's inspector with a
// plain-text 500: a queue or task that does not exist, a queue that is not
// empty, a task in the wrong state. Those are the caller's doing, so they
// become 404 or 409 (or 400), never a 500. Only when Redis itself is down is
// the answer a 5xx: 503.
func dashboardErrors(h http.Handler, ping func(context.Context) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		w := &errCapture{ResponseWriter: c.Response()}
		h.ServeHTTP(w, c.Request())
		if !w.captured {
			return nil
		}
		if w.status < 500 { // Asynqmon's own 4xx: same status, JSON body
			ae := dashboardError(w.body.String(), true)
			ae.Status, ae.Code = w.status, statusCode(w.status)
			ae.Message = strings.TrimPrefix(ae.Message, "the dashboard could not do that: ")
			return ae
		}
		redisUp := true
		if ping != nil {
			ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
			redisUp = ping(ctx) == nil
			cancel()
		}
		return dashboardError(w.body.String(), redisUp)
	}
}

// dashboardError maps the text of an Asynqmon 5xx to an API error.
func dashboardError(text string, redisUp bool) *APIError {
	msg, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
	msg = strings.TrimPrefix(msg, "asynq: ")
	if len(msg) > 200 {
		msg = msg[:200]
	}
	lower := strings.ToLower(msg)
	switch {
	case !redisUp:
		return &APIError{Status: http.StatusServiceUnavailable, Code: "redis_unavailable",
			Message: "the dashboard cannot reach Redis", cause: errBadRequest(msg)}
	case strings.Contains(lower, "not found") || strings.Contains(lower, "does not exist"):
		return &APIError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
	case strings.Contains(lower, "not empty") || strings.Contains(lower, "already") ||
		strings.Contains(lower, "cannot") || strings.Contains(lower, "active"):
		return &APIError{Status: http.StatusConflict, Code: "conflict", Message: msg}
	}
	return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "the dashboard could not do that: " + msg}
}

// statusCode is the error code of a status, as toAPIError names them.
func statusCode(status int) string {
	return strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
}

// errCapture passes a response through unless it is an error (4xx, 5xx),
// whose status and body it keeps instead of sending.
type errCapture struct {
	http.ResponseWriter
	captured bool
	status   int
	body     bytes.Buffer
}

func (w *errCapture) WriteHeader(code int) {
	if code >= 400 {
		w.captured, w.status = true, code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *errCapture) Write(b []byte) (int, error) {
	if w.captured {
		return w.body.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming working for the responses that pass through.
func (w *errCapture) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.captured {
		f.Flush()
	}
}

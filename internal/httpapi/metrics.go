package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/observe"
)

// routeUnmatched labels requests no route matched (404s for arbitrary
// paths), so scanners cannot blow up the metric's cardinality.
const routeUnmatched = "unmatched"

// observeRequests records every request's route, method, status and latency.
// It sits outside accessLog, which has already written any error response,
// so the status is final.
func observeRequests(m *observe.HTTPMetrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" || (c.Response().Status == http.StatusNotFound && route == "/*") {
				route = routeUnmatched
			}
			method := c.Request().Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
				http.MethodDelete, http.MethodOptions:
			default:
				method = "other"
			}
			m.Observe(route, method, c.Response().Status, time.Since(start))
			return nil
		}
	}
}

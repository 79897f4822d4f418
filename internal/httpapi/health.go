package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// handleHealthz answers while the process is alive (liveness).
func handleHealthz() echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz checks PostgreSQL and Redis (readiness); a failing dependency
// gives 503 naming it. The endpoint is public, so the error itself (hosts,
// ports, login failures) goes to the log, not to the caller.
func handleReadyz(d Deps) echo.HandlerFunc {
	type check struct {
		Status string `json:"status"`
	}
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		checks := map[string]check{}
		status := http.StatusOK
		for name, ping := range map[string]func() error{
			"postgres": func() error { return healthCheck(ctx, d.DB.PingContext) },
			"redis":    func() error { return healthCheck(ctx, d.Queue.Ping) },
		} {
			if err := ping(); err != nil {
				d.Log.WarnContext(ctx, "readiness check failed", "request_id", RequestID(c), "dependency", name, "err", err)
				checks[name] = check{Status: "unavailable"}
				status = http.StatusServiceUnavailable
				continue
			}
			checks[name] = check{Status: "ok"}
		}
		overall := "ok"
		if status != http.StatusOK {
			overall = "unavailable"
		}
		return c.JSON(status, map[string]any{"status": overall, "checks": checks})
	}
}

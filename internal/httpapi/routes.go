package httpapi

import (
	"github.com/labstack/echo/v4"
)

// addRoutes lists the whole API.
func addRoutes(e *echo.Echo, opts Options, d Deps) {
	e.GET("/healthz", handleHealthz())
	e.GET("/readyz", handleReadyz(d))

	api := e.Group("/api/v1")
	admin := api.Group("", requireToken(opts.APIToken))
	admin.POST("/tasks", handleTaskCreate(d.Queue))
	admin.GET("/tasks/:id", handleTaskGet(d.Queue))
	admin.DELETE("/tasks/:id", handleTaskCancel(d.Queue, opts.CancelWait))
	admin.POST("/tasks/:id/run", handleTaskRun(d.Queue))
	admin.GET("/queues", handleQueueList(d.Queue))
}
